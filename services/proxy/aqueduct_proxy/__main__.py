from aqueduct_proxy.bootstrap import run

run()
