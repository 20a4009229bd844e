from aqueduct_accounting.bootstrap import run

run()
