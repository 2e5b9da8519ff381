"""Hostile and large inputs to the composite scorer: linear-time rules, large batches off the event loop."""

import asyncio
import threading

import pytest

from medix_ray.rewards.composite import RULES_IN_THREAD_CHARS, CompositeScorer, RewardItem, RewardSpec
from medix_ray.rewards.embedding import EmbeddingSimilarity

MEGABYTE_OF_UNCLOSED_TAGS = "<answer>" * (2**20 // len("<answer>"))


@pytest.mark.parametrize("spec", [RewardSpec(), RewardSpec.paper()], ids=["medix", "paper"])
@pytest.mark.parametrize(
    "response",
    [
        MEGABYTE_OF_UNCLOSED_TAGS,
        "<OTHER><think>" + MEGABYTE_OF_UNCLOSED_TAGS,
        "<think>" * (2**20 // 7),
        " " * 2**20,  # the paper preset's whitespace squeeze was quadratic on a long run
        "<answer> " + " \n" * 2**19,
        "<OTHER><thinking>" + "</thinking><answer>" * (2**20 // 19),  # the paper format regex was quadratic here
    ],
    ids=["answer-tags", "after-think", "think-tags", "whitespace", "tag-then-whitespace", "think-answer-joins"],
)
@pytest.mark.timeout(30)  # linear: well under a second (docs/benchmarks.md); quadratic: hours for 1 MB
def test_a_megabyte_of_unclosed_tags_is_scored_in_linear_time(spec, response, fake_judge, fake_embedder):
    """The reference's `<answer>(.*?)</answer>` search is quadratic on such a response (hours for 1 MB)."""
    scorer = CompositeScorer(spec, fake_judge, EmbeddingSimilarity(fake_embedder))
    item = RewardItem("big", "q", response, "<OTHER> Naloxone")
    (bd,) = asyncio.run(scorer.score([item]))
    assert bd.id == "big" and bd.status["format"] == "scored"


def test_large_batches_run_their_rules_off_the_event_loop(fake_judge, fake_embedder, monkeypatch):
    threads = []
    original = CompositeScorer._prepare

    def recording(self, item):
        threads.append(threading.current_thread())
        return original(self, item)

    monkeypatch.setattr(CompositeScorer, "_prepare", recording)
    scorer = CompositeScorer(RewardSpec(), fake_judge, EmbeddingSimilarity(fake_embedder))
    reply = "<OTHER><think>r</think><answer>Naloxone</answer>"
    small = [RewardItem("s", "q", reply, "<OTHER> Naloxone")]
    n_large = RULES_IN_THREAD_CHARS // len(reply) + 1
    large = [RewardItem(str(k), "q", reply, "<OTHER> Naloxone") for k in range(n_large)]

    async def run():
        loop_thread = threading.current_thread()
        await scorer.score(small)
        small_threads = set(threads)
        threads.clear()
        out = await scorer.score(large)
        return loop_thread, small_threads, set(threads), out

    loop_thread, small_threads, large_threads, out = asyncio.run(run())
    assert small_threads == {loop_thread}
    assert loop_thread not in large_threads and len(large_threads) == 1
    assert [bd.id for bd in out] == [str(k) for k in range(n_large)] and all(bd.overall == 1.0 for bd in out)
