from aqueduct_proxy.batches.bootstrap import run

run()
