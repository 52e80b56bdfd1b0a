"""Command lines FastReID style: flags anywhere, the other words are KEY VALUE config overrides.

Shape shorthand: argv is a list of N str; the overrides come out as a list of 2M str
(KEY, VALUE, KEY, VALUE, ...).

FastReID's tools (and ours, until now) declare ``opts`` with ``nargs=argparse.REMAINDER``:
everything after the first override is an override, so

    tools/export_onnx.py --config-file c.yml MODEL.WEIGHTS w.pth --out calr.onnx

handed ``--out calr.onnx`` to the config and stopped with "the following arguments are
required: --out". ``parse_args`` reads the flags wherever they stand:

* a word that is one of the parser's flags (``--out x``, ``--out=x``, ``--evaluate``) is a
  flag, with as many values as its ``nargs`` says; a list flag (``nargs`` ``*`` or ``+``,
  e.g. ``--query a.jpg b.jpg``) stops at the next flag or at the next word that looks like a
  config key (``MODEL.WEIGHTS``, ``SEED``: upper case, dots) and is not an existing file;
* any other word is a config key and the word after it its value, whatever it looks like
  (``SEED -1``, ``MODEL.PIXEL_MEAN [0, 0, 0]``), unless that word is a flag;
* a word that starts with ``-`` where a key is expected is an unknown flag: an error naming
  it (not a config key FastReID would reject later with a less helpful message), and so is a
  key without a value.

Flag abbreviations (argparse's ``--conf`` for ``--config-file``) are not accepted: a prefix
is reported as an unknown flag.
"""
import os
import re
import sys

__all__ = ["parse_args", "split_argv"]

# A yacs key as typed on the command line: MODEL.WEIGHTS, SEED, CALR.STAGE1.EPOCHS.
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def _looks_like_key(word):
    return bool(_KEY.match(word)) and not os.path.exists(word)


def _flag_actions(parser, dest):
    """{option string: action} of ``parser``'s flags; checks it has no positional but ``dest``."""
    flags = {}
    for action in parser._actions:  # argparse has no public accessor; stable since Python 2.7
        if action.option_strings:
            for s in action.option_strings:
                flags[s] = action
        elif action.dest != dest:
            raise ValueError(f"parse_args: the parser has a positional argument {action.dest!r}; only "
                             f"{dest!r} (the KEY VALUE overrides) can be positional")
    return flags


def _arity(action):
    """(fewest, most) values a flag takes; most None: as many as follow."""
    nargs = action.nargs
    if nargs is None:
        return 1, 1
    if isinstance(nargs, int):
        return nargs, nargs  # 0 for switches (store_true, count, --help)
    return {"?": (0, 1), "*": (0, None), "+": (1, None)}.get(nargs, (0, None))


def split_argv(parser, argv, dest="opts"):
    """Split a command line into the parser's flags and the KEY VALUE overrides.

    Args:
        parser (argparse.ArgumentParser): its only positional, if any, is ``dest``.
        argv (list[str]): the words after the program name.
        dest (str): the name of the overrides' positional (FastReID's ``opts``).
    Returns:
        tuple[list[str], list[str]]: the flag words (with their values) in their order, and
        the overrides (an even count, keys at even positions).
    Raises:
        ValueError: a one-line message naming the unknown flag or the key without a value.
    """
    flags = _flag_actions(parser, dest)
    flag_words, overrides = [], []
    i = 0
    while i < len(argv):
        word = argv[i]
        name = _flag_name(word)
        if name in flags:
            fewest, most = _arity(flags[name])
            flag_words.append(word)
            i += 1
            if "=" in word and word.startswith("--"):
                continue  # --out=x carries its value
            taken = 0
            while i < len(argv) and (most is None or taken < most):
                nxt = argv[i]
                if _flag_name(nxt) in flags:
                    break  # argparse reports a missing value
                # Its required values are taken whatever they look like (--tolerance -1); an
                # optional or list value stops at a config key or an unknown flag.
                if taken >= fewest and (_looks_like_key(nxt) or (nxt.startswith("-") and not _is_number(nxt))):
                    break
                flag_words.append(nxt)
                taken += 1
                i += 1
            continue
        if word.startswith("-") and not _is_number(word):
            known = ', '.join(sorted(s for s in flags if s.startswith('--')))
            raise ValueError(f"unknown flag {word!r} (flags: {known}; "
                             f"anything else is a KEY VALUE config override)")
        if i + 1 >= len(argv):
            raise ValueError(f"config override {word!r} has no value (overrides are KEY VALUE pairs)")
        value = argv[i + 1]
        if _flag_name(value) in flags:
            raise ValueError(f"config override {word!r} has no value: the next word is the flag {value!r} "
                             f"(overrides are KEY VALUE pairs)")
        overrides += [word, value]
        i += 2
    return flag_words, overrides


def _flag_name(word):
    """``--out`` for ``--out=x``; the word itself otherwise."""
    return word.split("=", 1)[0] if word.startswith("--") else word


def _is_number(word):
    try:
        float(word)
        return True
    except ValueError:
        return False


def parse_args(parser, argv=None, dest="opts"):
    """``parser.parse_args`` with flags before, between or after the KEY VALUE overrides.

    Args:
        parser (argparse.ArgumentParser): the tool's parser; it may declare ``dest`` as
            FastReID does (``nargs=argparse.REMAINDER``, for --help), or not at all.
        argv (list[str] | None): the words after the program name (None: ``sys.argv[1:]``).
        dest (str): the attribute that receives the overrides.
    Returns:
        argparse.Namespace: the flags, and ``dest``: list[str] of 2M KEY VALUE words.
    Exits:
        2 through ``parser.error`` (usage, then one line naming the word) on an unknown flag,
        a key without a value, or what argparse itself rejects (a missing required flag).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        flag_words, overrides = split_argv(parser, argv, dest)
    except ValueError as e:
        parser.error(str(e))
    args = parser.parse_args(flag_words)
    setattr(args, dest, overrides)
    return args
