"""(being written)"""


def main(argv=None):
    raise SystemExit("the command line is being written")
