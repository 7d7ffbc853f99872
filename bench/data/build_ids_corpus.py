"""Build the identifier-rich fusion benchmark corpus (BEIR layout) — deterministic, no network.

    python bench/data/build_ids_corpus.py OUT_DIR [--seed 21] [--docs 3000]

A fictional SaaS company's back office in realistic prose: invoices, support tickets, product catalogue
entries and incident notes. Identifiers (invoice numbers ``INV-2026-004817``, tickets ``TKT-58213``, SKUs
``QX-4471-B``, error codes ``E4012``) are drawn at random; most documents are written from a handful of
templates, so many documents read alike and only the identifier tells them apart — as in a real billing
system. Twenty documents carry a unique story, found by a paraphrased question that names no identifier.

Queries (``queries.jsonl``) and judgments (``qrels/test.tsv``, grade 2 = the document itself, 1 = a
document that mentions the identifier) follow by construction:

* ``id-*``: a question naming an identifier (the lexical case: the dense model cannot tell ``004817`` from
  ``004871``);
* ``para-*``: a paraphrase of a unique story (the semantic case: few shared words).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

COMPANIES = [
    "Brightwater Dental",
    "Kestrel Logistics",
    "Northwind Bakery",
    "Orchid Legal LLP",
    "Pinecrest Schools",
    "Harbor Freight Partners",
    "Lumen Architects",
    "Saffron Kitchens",
    "Vela Robotics",
    "Ironbark Mining",
    "Tidewater Clinics",
    "Copperleaf Studios",
    "Meridian Travel",
    "Bluebell Nurseries",
    "Granite Insurance",
    "Foxglove Pharmacy",
    "Riverstone Hotels",
    "Aster Analytics",
    "Juniper Wealth",
    "Cobalt Print Works",
]
PLANS = ["Team", "Business", "Enterprise", "Starter"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
PRODUCTS = [
    ("wireless barcode scanner", "scans 1D and 2D codes at up to 30 metres, IP54 housing"),
    ("thermal receipt printer", "80 mm paper, 250 mm/s, USB and Ethernet"),
    ("card payment terminal", "contactless, chip and PIN, 4G fallback"),
    ("label printer", "prints shipping labels up to 104 mm wide"),
    ("cash drawer", "five note and eight coin compartments, printer-driven"),
    ("handheld inventory computer", "Android, 5 inch screen, hot-swap battery"),
]
GENERIC_ISSUES = [
    "The customer reports that the invoice total does not match the quote they received and asks for a "
    "corrected invoice.",
    "The customer cannot download the invoice PDF from the billing page; the link returns an error.",
    "The customer asks why the card payment failed and whether it will be retried automatically.",
    "The customer wants to add a purchase order number to the invoice for their accounts payable team.",
    "The customer asks for the VAT number to be shown on the invoice.",
    "The customer reports being charged for more seats than they use and asks for the seat count to be "
    "reviewed.",
]
UNIQUE = [
    (
        "A veterinary clinic was billed in euros although their account is set to pounds sterling; the currency "
        "switched after their administrator changed the workspace region to Ireland.",
        "vet practice invoiced in the wrong currency after moving workspace location",
    ),
    (
        "The customer's finance team was charged twice in the same minute when their browser retried the "
        "checkout form after a timeout on a slow hotel wifi connection.",
        "duplicate charge caused by a resubmitted payment page on a bad network",
    ),
    (
        "A school district asked to split one annual invoice across three cost centres, one per campus, "
        "because each campus pays from its own budget.",
        "education customer wants a single yearly bill divided between several budgets",
    ),
    (
        "The thermal printer stopped cutting the paper after the firmware update; receipts come out as one long "
        "strip until the device is power-cycled.",
        "after upgrading its software the till printer no longer separates tickets",
    ),
    (
        "A nonprofit requested that its tax-exempt certificate be applied retroactively to the last four "
        "invoices, which included sales tax.",
        "charity wants past bills reissued without sales tax because it is exempt",
    ),
    (
        "The barcode scanner reads every code twice when paired over Bluetooth with an iPad running the "
        "inventory app, doubling stock counts.",
        "handheld reader registers each item two times with a tablet, inflating stock",
    ),
    (
        "A customer's bank rejected the direct debit because the mandate reference exceeded 35 characters "
        "after the company name was appended.",
        "automatic bank collection refused because an authorisation code was too long",
    ),
    (
        "An accounting firm asked for invoices addressed to each client they manage rather than to the firm "
        "itself, so they can forward them unchanged.",
        "bookkeepers want bills issued in the names of the businesses they represent",
    ),
    (
        "The card terminal shows 'contactless limit exceeded' for every tap above ten pounds since the "
        "merchant category code was changed by the acquirer.",
        "tap to pay refused for small amounts after the payment processor reclassified the shop",
    ),
    (
        "A hotel group's trial converted to a paid subscription on a public holiday and the welcome credit was "
        "never applied to the first bill.",
        "promised introductory discount missing from first charge after free period ended",
    ),
    (
        "Downloaded invoice PDFs print with the company logo cut in half on A4 paper because the template was "
        "designed for US Letter.",
        "exported bills are cropped when printed on European paper size",
    ),
    (
        "The customer asked whether invoices can be emailed to a shared accounts inbox and also posted as "
        "paper copies to their head office for the auditors.",
        "send bills both electronically to a team mailbox and by post for audit",
    ),
    (
        "After a merger, two workspaces must be combined into one billing account while keeping the order "
        "history of both companies.",
        "consolidate subscriptions of two merged businesses without losing past purchases",
    ),
    (
        "A mining company needs its invoices in Spanish for the Chilean subsidiary while the parent company "
        "keeps receiving them in English.",
        "bills in another language for a foreign branch office",
    ),
    (
        "The label printer feeds two blank labels after every print when the label size is set to 4 by 6 "
        "inches in the driver.",
        "sticker printer wastes empty stickers between each job",
    ),
    (
        "A pharmacy chain reported that refunds issued on the last day of the month appeared on the next "
        "month's statement, confusing their reconciliation.",
        "money returned at month end shows up on the following period statement",
    ),
    (
        "The customer wants to stop automatic renewal but keep access until the paid period ends, and asked "
        "for written confirmation for their records.",
        "cancel auto-renew while retaining service to end of term with written proof",
    ),
    (
        "The cash drawer pops open by itself whenever the receipt printer runs a self-test at start of day.",
        "till box opens unexpectedly during the printer's morning check",
    ),
    (
        "An architecture studio was charged the enterprise price after a sales rep applied the wrong price "
        "book when extending their contract.",
        "design firm overcharged because the salesperson used an incorrect tariff on renewal",
    ),
    (
        "The handheld inventory computer's battery drains in two hours in cold-storage rooms kept at minus "
        "twenty degrees.",
        "mobile stock device loses charge quickly in freezer warehouses",
    ),
]
ERROR_TEXT = [
    "payment gateway timeout",
    "card declined by issuer",
    "webhook signature mismatch",
    "tax calculation service unavailable",
    "duplicate idempotency key",
    "currency not supported",
]


def build(out: Path, seed: int, n_docs: int) -> None:
    rng = random.Random(seed)
    used: set[str] = set()

    def ident(fmt: str) -> str:
        while True:
            s = fmt.format(
                n6=rng.randrange(10**6),
                n5=rng.randrange(10**4, 10**5),
                n4=rng.randrange(1000, 10000),
                a=rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ"),
                b=rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ"),
                n3=rng.randrange(100, 1000),
                c=rng.choice("ABCDE"),
            )
            if s not in used:
                used.add(s)
                return s

    docs: list[dict] = []
    queries: list[dict] = []
    qrels: list[tuple[str, str, int]] = []
    skus = [(ident("{a}{b}-{n4}-{c}"), *PRODUCTS[i % len(PRODUCTS)]) for i in range(60)]
    errors = [(ident("E{n4}"), ERROR_TEXT[i % len(ERROR_TEXT)]) for i in range(40)]
    for sku, name, spec in skus:
        docs.append(
            {
                "_id": f"sku-{sku}",
                "title": f"{name.capitalize()} {sku}",
                "text": f"Catalogue entry {sku}: {name}. {spec.capitalize()}. Sold in packs of "
                f"{rng.choice([1, 2, 5, 10])}; warranty {rng.choice([12, 24, 36])} months. "
                f"Replacement parts are ordered under the same reference {sku}.",
            }
        )
    for code, what in errors:
        docs.append(
            {
                "_id": f"err-{code}",
                "title": f"Error {code}",
                "text": f"Error code {code} means {what}. The billing service logs {code} together with "
                f"the request id. Retry after a few minutes; if {code} persists for more than an "
                f"hour, open an incident with the payments on-call engineer.",
            }
        )
    n_inv = n_docs - len(docs)
    invoices: list[tuple[str, str, str]] = []
    unique_slots = set(rng.sample(range(n_inv // 2), len(UNIQUE)))
    u = 0
    for i in range(n_inv // 2):
        inv = ident("INV-2026-{n6:06d}")
        company = rng.choice(COMPANIES)
        month = rng.choice(MONTHS)
        amount = f"{rng.randrange(40, 9000)}.{rng.randrange(100):02d}"
        plan = rng.choice(PLANS)
        seats = rng.randrange(2, 250)
        invoices.append((inv, company, month))
        docs.append(
            {
                "_id": f"inv-{inv}",
                "title": f"Invoice {inv}",
                "text": f"Invoice {inv} issued to {company} for the {plan} plan, {seats} seats, billing "
                f"period {month} 2026. Total due {amount} USD, payment terms net 30. "
                f"Status: {rng.choice(['paid', 'open', 'overdue', 'void'])}.",
            }
        )
        tkt = ident("TKT-{n5}")
        if i in unique_slots:
            story, question = UNIQUE[u]
            u += 1
            queries.append({"_id": f"para-{u:02d}", "text": question})
            qrels.append((f"para-{u:02d}", f"tkt-{tkt}", 2))
        else:
            story = rng.choice(GENERIC_ISSUES)
        related = rng.random() < 0.5
        ref = f" The ticket concerns invoice {inv}." if related else ""
        sku_ref = f" Affected device: {rng.choice(skus)[0]}." if rng.random() < 0.2 else ""
        err_ref = f" The logs show error {rng.choice(errors)[0]}." if rng.random() < 0.2 else ""
        docs.append(
            {
                "_id": f"tkt-{tkt}",
                "title": f"Support ticket {tkt}",
                "text": f"Ticket {tkt} opened by {company} in {month}. {story}{ref}{sku_ref}{err_ref} "
                f"Priority {rng.choice(['low', 'normal', 'high'])}; assigned to the billing "
                f"support queue.",
            }
        )
    # identifier questions: invoices, tickets, SKUs, error codes
    templates = [
        ("inv", "what is the status of invoice {x}", "how much is due on {x} and when"),
        ("tkt", "what was ticket {x} about", "summary of support case {x}"),
        ("sku", "warranty and pack size of product {x}", "spec sheet for item {x}"),
        ("err", "what does error {x} mean", "the service logged {x}, what should I do"),
    ]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["_id"].split("-", 1)[0], []).append(d)
    qn = 0
    for kind, t1, t2 in templates:
        for j, d in enumerate(rng.sample(by_kind[kind], 5)):
            x = d["_id"].split("-", 1)[1]
            qn += 1
            qid = f"id-{qn:02d}"
            queries.append({"_id": qid, "text": (t1 if j % 2 == 0 else t2).format(x=x)})
            qrels.append((qid, d["_id"], 2))
            for other in docs:
                if other["_id"] != d["_id"] and x in other["text"]:
                    qrels.append((qid, other["_id"], 1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps(q) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, d, s in qrels:
            f.write(f"{q}\t{d}\t{s}\n")
    print(f"{len(docs)} documents, {len(queries)} queries -> {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--docs", type=int, default=3000)
    a = ap.parse_args()
    build(a.out, a.seed, a.docs)
