from stvsr_cli.cli import main

main(prog_name="stvsr")
