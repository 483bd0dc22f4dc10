"""words: text analysis for Fabric, in Python with the standard library only.

Built into a component by componentize-py (scripts/build-tools); the WIT
world is wit/world.wit, whose doc comments are the tools' descriptions.
"""

import re
from collections import Counter

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.api import Summary, WordCount

WORD = re.compile(r"[\w']+")
SENTENCE_END = re.compile(r"[.!?]+")


def words_of(text: str) -> list[str]:
    return WORD.findall(text)


class Api(exports.Api):
    def summarize(self, text: str) -> Summary:
        words = words_of(text)
        sentences = [s for s in SENTENCE_END.split(text) if WORD.search(s)]
        mean = sum(len(w) for w in words) / len(words) if words else 0.0
        return Summary(
            words=len(words),
            distinct=len({w.lower() for w in words}),
            sentences=len(sentences),
            mean_word_length=mean,
        )

    def top_words(self, text: str, n: int) -> list[WordCount]:
        if n == 0:
            raise Err("n must be at least 1")
        counts = Counter(w.lower() for w in words_of(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [WordCount(word=w, count=c) for w, c in ranked[:n]]
