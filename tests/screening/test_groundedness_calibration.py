"""Sentence-level support: a paraphrase passes, an unrelated sentence fails (labelled pairs, real MiniLM).
The threshold ``SENTENCE_SUPPORT_MIN`` is calibrated on these pairs; docs/pipeline.md reports the result."""

from __future__ import annotations

from charter import _answer_checks as checks
from charter.retrieval._embedding import get_embedder

SOURCE = (
    "Card refunds take 5–10 business days to arrive after they are issued. Annual plans cancelled within 30 days "
    "are refunded pro rata. Monthly payments are not refundable. We retry a failed card payment on days 3, 5 "
    "and 7. From the fourth day of illness employees must submit a medical certificate."
)
PARAPHRASES = [
    "A refund to a card arrives within 5 to 10 business days of being issued [S1].",
    "If you cancel a yearly plan in the first 30 days you get a proportional refund [S1].",
    "We do not refund monthly charges [S1].",
    "Failed card payments are retried on the third, fifth and seventh day [S1].",
    "After three days off sick, staff have to hand in a doctor's certificate [S1].",
]
UNRELATED = [
    "Our office in Lisbon is closed on public holidays [S1].",
    "The Business plan includes single sign-on and audit logs [S1].",
    "Enterprise customers get a dedicated account manager [S1].",
    "Passwords must be at least twelve characters long [S1].",
    "The mobile app supports dark mode on Android and iOS [S1].",
]


def test_paraphrases_pass_and_unrelated_sentences_fail() -> None:
    emb = get_embedder("minilm")

    def embed(texts):  # type: ignore[no-untyped-def]
        return [list(map(float, v)) for v in emb.embed(list(texts))]

    passages = {"S1": SOURCE}
    para = checks.score_sentences(PARAPHRASES, passages, embed)
    unrel = checks.score_sentences(UNRELATED, passages, embed)
    assert all(s.score >= checks.SENTENCE_SUPPORT_MIN for s in para), [(s.sentence, s.score) for s in para]
    assert all(s.score < checks.SENTENCE_SUPPORT_MIN for s in unrel), [(s.sentence, s.score) for s in unrel]
