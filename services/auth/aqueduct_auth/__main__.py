from aqueduct_auth.bootstrap import run

if __name__ == "__main__":
    run()
