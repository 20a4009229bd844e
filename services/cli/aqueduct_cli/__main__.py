from aqueduct_cli.main import main

main()
