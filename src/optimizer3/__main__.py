from optimizer3.cli import run

run()
