#compdef sollol

_sollol_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _SOLLOL_COMPLETE=complete_zsh sollol)
}

compdef _sollol_completion sollol
