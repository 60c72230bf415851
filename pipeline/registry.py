"""The MTEB(eng, v1) classification tasks GIST mined, pinned to the revisions MTEB v1 evaluates.

Pins come from `mteb` 1.x task metadata (the revisions MTEB v1 results cite); configs are the English
subsets of the multilingual datasets.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import task_types
from pipeline.common.text import slug


@dataclass(frozen=True)
class MtebTask:
    name: str
    hub_id: str
    revision: str
    config: str | None
    train_rows: int
    n_labels: int
    split: str = "train"
    test_split: str | None = "test"  # None: the task has no test split (it is then not decontaminated)
    # The snapshot layout this task's loading was checked against ("unverified": not read by any test or run)
    verified_layout: str = "unverified"
    # The licence mteb's task metadata gives (None where it says "not specified"); a licence in the
    # snapshot's own dataset card wins over this.
    license: str | None = None

    @property
    def slug(self) -> str:
        """Short snake-case id used in `task_type` (`mteb_<slug>`) and file names."""
        return slug(self.name.removesuffix("Classification"))

    @property
    def task_type(self) -> str:
        return task_types.mteb(self.slug)


MTEB_TASKS: dict[str, MtebTask] = {
    t.name: t
    for t in [
        MtebTask("AmazonCounterfactualClassification", "mteb/amazon_counterfactual",
                 "e8379541af4e31359cca9fbcf4b00f2671dba205", "en", 4_018, 2,
                 verified_layout="per-config folders en/{train,validation,test}.jsonl beside a loading script: a "
                                 "test fixture laid out as that snapshot is described, not the real files",
                 license="cc-by-4.0"),
        MtebTask("AmazonPolarityClassification", "mteb/amazon_polarity",
                 "e2d317d38cd51312af73b3d32a06d1a08b442046", None, 3_600_000, 2, license="apache-2.0"),
        MtebTask("AmazonReviewsClassification", "mteb/amazon_reviews_multi",
                 "1399c76144fd37290681b995c656ef9b2e06e26d", "en", 200_000, 5, license="other"),
        MtebTask("Banking77Classification", "mteb/banking77",
                 "0fd18e25b25c072e09e0d92ab615fda904d66300", None, 10_003, 77,
                 verified_layout="root-level train.jsonl/test.jsonl: the real snapshot (shared data, tests)",
                 license="mit"),
        MtebTask("EmotionClassification", "mteb/emotion",
                 "4f58c6b202a23cf9a4da393831edf4f9183cad37", None, 16_000, 6),
        MtebTask("ImdbClassification", "mteb/imdb",
                 "3d86128a09e091d6018b6d26cad27f2739fc2db7", None, 25_000, 2,
                 verified_layout="root-level train.jsonl/test.jsonl: the real snapshot (shared data, tests)"),
        MtebTask("MTOPDomainClassification", "mteb/mtop_domain",
                 "d80d48c1eb48d3562165c59d59d0034df9fff0bf", "en", 15_667, 11),
        MtebTask("MTOPIntentClassification", "mteb/mtop_intent",
                 "ae001d0e6b1228650b7bd1c2c65fb50ad11a8aba", "en", 15_667, 113),
        MtebTask("MassiveIntentClassification", "mteb/amazon_massive_intent",
                 "31efe3c427b0bae9c22cbb560b8f15491cc6bed7", "en", 11_514, 60, license="apache-2.0"),
        MtebTask("MassiveScenarioClassification", "mteb/amazon_massive_scenario",
                 "7d571f92784cd94a019292a1f45445077d0ef634", "en", 11_514, 18, license="apache-2.0"),
        MtebTask("ToxicConversationsClassification", "mteb/toxic_conversations_50k",
                 "d7c0de2777da35d6aae2200a62c6e0e5af397c4c", None, 50_000, 2, license="cc-by-4.0"),
        MtebTask("TweetSentimentExtractionClassification", "mteb/tweet_sentiment_extraction",
                 "d604517c81ca91fe16a244d1248fc021f9ecee7a", None, 27_481, 3),
    ]
}

# GIST excluded Amazon Polarity (its model cards and compile script agree).
DEFAULT_EXCLUSIONS: dict[str, str] = {
    "AmazonPolarityClassification": (
        "excluded by GISTEmbed (arXiv 2402.16829): 3.6M near-duplicate review rows would dominate the "
        "mixture; GIST's model cards and compile script leave it out"
    ),
}


def get_task(name: str) -> MtebTask:
    """Look a task up by name, with an error that lists the known names."""
    try:
        return MTEB_TASKS[name]
    except KeyError:
        known = ", ".join(sorted(MTEB_TASKS))
        raise KeyError(f"unknown MTEB task {name!r}; known MTEB(eng, v1) classification tasks: {known}") from None
