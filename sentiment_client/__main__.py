"""``python -m sentiment_client``: score texts from the command line or a pipe, one JSON line per text.

python -m sentiment_client "A moving film." "Dull and far too long."
cut -f2 reviews.tsv | python -m sentiment_client --url http://sentiment:8000 > scores.jsonl
SENTIMENT_URL=http://sentiment:8000 python -m sentiment_client < texts.txt
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator

from sentiment_client.client import SentimentClient
from sentiment_client.errors import SentimentError

DEFAULT_URL = "http://127.0.0.1:8000"
GROUP = 256
"""Texts per call: stdin is read, scored and written a group at a time, so a long pipe streams and each group has its own timeout."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Score texts with the sentiment service's POST /predict.

Texts come from the arguments, or, when none is given, one per line from stdin
(blank lines are skipped). Each text gets one JSON line on stdout, in input order:
  {"index": 0, "label": "positive", "score": 0.981054, "truncated": false, "tokens": 5}
"index" is the text's position among the arguments, or its line number on stdin
(from 0). "score" is P(positive); "truncated" says the text lost its middle to the
model's token limit; "tokens" is its length in tokens.
"""

EPILOG = """\
exit status: 0 every text was scored; 1 the service refused or could not be
reached (the reason on stderr; lines already written stay valid); 2 bad usage
or unreadable input. Overloaded (503, 429) and connection failures are retried
with backoff within --timeout.
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        client = SentimentClient(args.url, timeout=args.timeout, retries=args.retries)
    except ValueError as exc:  # a malformed --url
        sys.stderr.write(f"sentiment_client: {exc}\n")
        return EXIT_USAGE
    groups = _groups(enumerate(args.texts)) if args.texts else _groups(_stdin_lines())
    try:
        with client:
            for group in groups:
                indexes = [index for index, _ in group]
                try:
                    predictions = client.predict([text for _, text in group], explain=args.explain)
                except SentimentError as error:
                    return _fail(error, indexes)
                sys.stdout.writelines(json.dumps({"index": i, **p.to_dict()}) + "\n" for i, p in zip(indexes, predictions, strict=True))
                sys.stdout.flush()
    except UnicodeDecodeError as exc:
        sys.stderr.write(f"sentiment_client: stdin is not UTF-8 text ({exc.reason})\n")
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sentiment_client", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score (default: one per line from stdin)")
    parser.add_argument(
        "--url",
        default=os.environ.get("SENTIMENT_URL") or DEFAULT_URL,
        help=f"the service's base URL (default: $SENTIMENT_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=10.0, metavar="SECONDS", help="seconds a call may take, retries included (default: 10)"
    )
    parser.add_argument(
        "--retries", type=_count, default=3, metavar="N", help="times a request is sent again after 503/429/connection errors (default: 3)"
    )
    parser.add_argument("--explain", action="store_true", help="also print each word's weight in the score (an 'explanation')")
    return parser


def _stdin_lines() -> Iterator[tuple[int, str]]:
    sys.stdin.reconfigure(encoding="utf-8", errors="strict")
    for number, line in enumerate(sys.stdin):
        text = line.rstrip("\r\n")
        if text.strip():
            yield number, text


def _groups(numbered: Iterable[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    numbered = iter(numbered)
    while group := list(itertools.islice(numbered, GROUP)):
        yield group


def _fail(error: SentimentError, indexes: list[int]) -> int:
    """The error, and which inputs the failed request carried (the server's ``texts[i]`` counts within that request)."""
    carried = error.texts if error.texts is not None else range(len(indexes))
    error.texts = None
    first, last = indexes[carried.start], indexes[carried.stop - 1]
    where = f"input {first}" if first == last else f"inputs {first}-{last}"
    sys.stderr.write(f"sentiment_client: error: {error} [{where}]\n")
    return EXIT_FAILED


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value!r}")
    return number


if __name__ == "__main__":
    sys.exit(main())
