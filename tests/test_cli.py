"""Every `cardiotwin` subcommand builds and prints its help (a stray % in a help text, or a
broken option definition, fails here rather than in a user's terminal)."""

import argparse

from cardiotwin.cli import build_parser


def _walk(parser: argparse.ArgumentParser, path=("cardiotwin",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def test_every_subcommand_has_help():
    seen = {}
    for path, parser in _walk(build_parser()):
        text = parser.format_help()
        assert text.startswith("usage:"), path
        seen[" ".join(path[1:])] = text
    for cmd in ("simulate vc", "simulate ap", "features", "demo", "generate", "train", "twin",
                "screen", "protocol-search", "hybrid fit", "reconstruct"):
        assert cmd in seen, cmd
