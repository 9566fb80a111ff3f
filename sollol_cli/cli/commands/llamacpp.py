"""(temporary; helper-1 replaces this file with the llama-cpp commands)"""

import typer

app = typer.Typer(help="Build and locate the llama.cpp binaries sollol uses.")
