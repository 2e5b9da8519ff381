import pytest

from medix_ray.rewards import adapters
from medix_ray.rewards.adapters import MedixReward, UnscoredRewardError
from medix_ray.rewards.composite import CompositeScorer, RewardSpec
from medix_ray.rewards.embedding import EmbeddingSimilarity

GOOD = "<OTHER><think>r</think><answer>Naloxone</answer>"


@pytest.fixture
def reward(fake_judge, fake_embedder):
    r = MedixReward()
    r._scorer = CompositeScorer(RewardSpec(), fake_judge, EmbeddingSimilarity(fake_embedder))
    return r


def test_trl_protocol_with_plain_and_conversational_completions(reward):
    out = reward(
        prompts=["p1", "p2"],
        completions=[GOOD, [{"role": "assistant", "content": "<OTHER><think>r</think><answer>No idea</answer>"}]],
        problem=["Antidote?", "Antidote?"],
        solution=["<OTHER> Naloxone", "<OTHER> Naloxone"],
    )
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(0.145)  # format + modality only
    assert reward.__name__ == "medix_reward"


def test_trl_missing_reference_column_is_named(reward):
    with pytest.raises(KeyError, match="no 'solution' column"):
        reward(prompts=["p"], completions=[GOOD], answer=["x"])


def test_trl_unscored_items_are_none(failing_judge, fake_embedder):
    r = MedixReward()
    r._scorer = CompositeScorer(RewardSpec(), failing_judge, EmbeddingSimilarity(fake_embedder))
    out = r(
        prompts=["p"],
        completions=["<OTHER><think>r</think><answer>Something else</answer>"],
        solution=["<OTHER> Naloxone"],
    )
    assert out == [None]


def test_verl_and_easyr1_compute_score(reward, monkeypatch):
    monkeypatch.setattr(adapters, "_default", reward)
    got = adapters.verl_compute_score("medix", GOOD, "<OTHER> Naloxone", {"question": "Antidote?"})
    assert got == {
        "score": pytest.approx(1.0),
        "format": 1.0,
        "accuracy_llm": 1.0,
        "accuracy_embed": 1.0,
        "modality": 1.0,
    }
    (row,) = adapters.easyr1_compute_score([{"response": GOOD, "ground_truth": "<OTHER> Naloxone"}])
    assert row["overall"] == pytest.approx(1.0)


def test_verl_unscored_raises_unless_zero_is_asked_for(failing_judge, fake_embedder, monkeypatch):
    r = MedixReward()
    r._scorer = CompositeScorer(RewardSpec(), failing_judge, EmbeddingSimilarity(fake_embedder))
    monkeypatch.setattr(adapters, "_default", r)
    bad = "<OTHER><think>r</think><answer>Something</answer>"
    with pytest.raises(UnscoredRewardError, match="MEDIX_RAY_ON_UNSCORED=zero"):
        adapters.verl_compute_score("medix", bad, "<OTHER> Naloxone")
    monkeypatch.setenv("MEDIX_RAY_ON_UNSCORED", "zero")
    assert adapters.verl_compute_score("medix", bad, "<OTHER> Naloxone")["score"] == 0.0
