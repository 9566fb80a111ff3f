from sollol_cli.cli import main

main()
