"""The `physteer` command line: thin entry points, one module per group of commands, each
parsing a config and calling one study (cli.main builds the parser and lists the commands by job).

May import every other package; nothing imports cli.
"""
