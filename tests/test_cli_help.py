"""Every ``bgmid`` option and subcommand explains itself in ``--help``.

The project's rule is one CLI whose ``--help`` teaches: this walks the whole argparse tree, built exactly as
``bgmid.cli.main`` builds it, so a new option or subcommand added without a help text fails here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from bgmid.cli import build_parser


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """Yield ``(path, subparser, help)`` for every subcommand under ``parser``, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                sub_path = f"{path} {name}"
                yield sub_path, sub, helps.get(name) or ""
                yield from _walk(sub, sub_path)


def _undocumented_options(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help is argparse.SUPPRESS:
            continue
        if not (action.help or "").strip():
            missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_and_subcommand_has_help() -> None:
    root = build_parser()
    commands = list(_walk(root, "bgmid"))
    assert len(commands) > 10, "the walk found too few subcommands; is build_parser still the entry point?"
    missing = _undocumented_options(root, "bgmid")
    for path, sub, help_text in commands:
        if not ((sub.description or "").strip() or help_text.strip()):
            missing.append(f"{path}: no description or help")
        missing.extend(_undocumented_options(sub, path))
    assert not missing, "undocumented in --help:\n" + "\n".join(missing)


def test_every_help_text_renders() -> None:
    """A stray '%' only shows when --help is printed: in an option's help it raises, in a description (which
    argparse does not %-format) a '%%' escape is printed as is. Format every parser's help."""
    root = build_parser()
    for path, sub, _ in [("bgmid", root, ""), *_walk(root, "bgmid")]:
        text = sub.format_help()
        assert text.strip(), path
        assert "%%" not in text, f"{path}: a literal '%%' in --help (descriptions are not %-formatted)"
