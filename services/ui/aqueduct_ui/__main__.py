from aqueduct_ui.bootstrap import run

run()
