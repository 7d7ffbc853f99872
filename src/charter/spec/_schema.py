"""The charter schema: one pydantic model per section. This module is the reference for the file format;
``docs/charter-reference.md`` is generated from it (``charter docs reference``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from charter.errors import UsageError
from charter.spec._types import Comparator, Duration, Identifier, is_valid_token, parse_threshold

Sensitivity = Literal["public", "internal", "confidential", "restricted"]
SENSITIVITY_ORDER: dict[str, int] = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}


class Section(BaseModel):
    """Base for every section: unknown keys are errors, NaN/inf are refused, values are immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True, validate_default=True
    )


# --------------------------------------------------------------------------------------------- workflow
WorkflowKind = Literal["answer", "draft", "agent"]


class PromptBindings(Section):
    """Which prompt (by name in `prompts`) serves which purpose. The pipeline looks prompts up by purpose,
    never by a name of its own."""

    system: Identifier | None = Field(
        None,
        description="The system prompt of every request. Default: the charter's only prompt (with several "
        "prompts this key must be set; with none, requests carry no system prompt).",
    )


class Workflow(Section):
    """Which workflow this charter governs."""

    id: Identifier = Field(
        description="Stable workflow id; used in URLs, metrics and as the OpenAI model name."
    )
    name: str = Field(min_length=3, description="Human-readable name.")
    description: str = Field("", description="One paragraph on what the workflow is for.")
    kind: WorkflowKind = Field(
        "draft",
        description="`answer`: the output goes back to the asker, who may see everything they may read "
        "(no outbound/internal split, no tone); `draft`: the output is a draft for a third party, reviewed "
        "before it is sent (sources outside `review.outbound_sensitivity` become internal notes); `agent`: a "
        "task carried out with tools over several steps, the final answer going back to the asker "
        "(limits in `agent`). Defaults per kind: docs/charter.md.",
    )
    prompts: PromptBindings = Field(
        default_factory=lambda: PromptBindings(), description="Prompts by purpose (`system`)."
    )


class Scope(Section):
    """What the workflow is for, and what it must never do."""

    job: str = Field(min_length=1, description="The job, as one specific sentence (who, what, for whom).")
    users: list[Identifier] = Field(min_length=1, description="Roles that use the workflow.")
    inputs: list[str] = Field(min_length=1, description="What comes in (e.g. a question from a colleague).")
    outputs: list[str] = Field(min_length=1, description="What goes out (e.g. a cited answer).")
    next_step: str = Field(
        min_length=1,
        description="What happens to the output next (e.g. read by the asker; reviewed, then sent).",
    )
    out_of_scope: list[str] = Field(
        default_factory=list, description="Topics the workflow must not answer; questions on them escalate."
    )
    forbidden_actions: list[Identifier] = Field(
        default_factory=list, description="Actions no tool may ever perform; such tools cannot be registered."
    )


# --------------------------------------------------------------------------------------------- identity
class OIDC(Section):
    """Optional OpenID Connect JWT validation for the server."""

    issuer: str = Field(description="Expected `iss` claim.")
    audience: str = Field(description="Expected `aud` claim.")
    jwks: str = Field(description="Path (relative to the charter) or URL of the JWKS with the signing keys.")
    user_claim: str = Field("sub", description="Claim that holds the user id.")


class Identity(Section):
    """Where principals come from."""

    users_file: str = Field(
        "users.yaml", description="YAML file (relative to the charter) with users, groups, service accounts."
    )
    oidc: OIDC | None = Field(None, description="Optional OIDC settings.")


class RoleScope(Section):
    """What this role's members may ask about, on top of the workflow-wide lists (`scope.out_of_scope`,
    `review.sensitive_topics`, `review.escalations`).

    For a principal with several roles: a workflow-wide topic is lifted when any of their roles lifts it,
    and every topic any of their roles adds applies (an addition is never lifted by another role)."""

    allowed_topics: list[str] = Field(
        default_factory=list,
        description="Topics of `scope.out_of_scope` this role may ask about (e.g. a manager may ask about "
        "salary bands).",
    )
    out_of_scope: list[str] = Field(
        default_factory=list,
        description="More topics this role may not ask about; questions on them escalate.",
    )
    not_sensitive: list[str] = Field(
        default_factory=list,
        description="Topics of `review.sensitive_topics` that need no human when this role asks.",
    )
    sensitive_topics: list[str] = Field(
        default_factory=list, description="More topics that always go to a human when this role asks."
    )
    escalations: list[Escalation] = Field(
        default_factory=list,
        description="Escalation rules for this role's requests; a rule here wins over `review.escalations` "
        "for the same trigger.",
    )


class Role(Section):
    """A role: what its members may do in this workflow."""

    description: str = Field("", description="What the role is for.")
    permissions: list[str] = Field(
        default_factory=list,
        description="Workflow actions this role may perform, e.g. `ask`, `search`, `review.decide`, `audit.read`, "
        "`traces.read_all`, `sources.sync`, `kill_switch`, `gate.run`, `evals.run`. Tool use is granted per tool.",
    )
    scope: RoleScope = Field(
        default_factory=lambda: RoleScope(),
        description="Scope by role: topics allowed, refused or sensitive for this role, and its escalation targets.",
    )


# --------------------------------------------------------------------------------------------- sources
class Permissions(Section):
    """How a source's documents are protected."""

    model: Literal["public", "per-document", "groups"] = Field(
        description="`public`: everyone may read; `per-document`: each document carries its own ACL "
        "(missing or unparseable ACL means private); `groups`: every document readable by `groups` only."
    )
    groups: list[str] = Field(default_factory=list, description="With `groups`: the group ids that may read.")

    @model_validator(mode="after")
    def _groups_only_with_groups_model(self) -> Permissions:
        if self.model == "groups" and not self.groups:
            raise ValueError("permission model 'groups' needs a non-empty 'groups' list")
        if self.model != "groups" and self.groups:
            raise ValueError(f"'groups' is only allowed with permission model 'groups', not {self.model!r}")
        return self


class Chunking(Section):
    """How documents are split for retrieval."""

    max_tokens: int = Field(256, ge=32, le=2048, description="Upper bound on tokens per chunk.")
    overlap: int = Field(32, ge=0, le=512, description="Tokens shared by consecutive chunks of one section.")

    @model_validator(mode="after")
    def _overlap_smaller(self) -> Chunking:
        if self.overlap >= self.max_tokens:
            raise ValueError("overlap must be smaller than max_tokens")
        return self


class Freshness(Section):
    """How old a source may get before it is stale."""

    max_age: Duration = Field(description="Maximum time since the last successful sync, e.g. `7d`.")
    on_stale: Literal["flag", "exclude"] = Field(
        "flag", description="Flag stale sources in answers, or exclude them."
    )
    acl_max_age: Duration | None = Field(
        None,
        description="Maximum time since the source's ACLs were last synced (a full sync or "
        "`charter sync --acl-only`); default: `max_age`.",
    )
    on_acl_stale: Literal["exclude", "flag"] = Field(
        "exclude",
        description="When the ACLs are older than `acl_max_age`: `exclude` the source from answers "
        "(fail closed, the default) or only `flag` it.",
    )


class Approval(Section):
    """Who approved something, and when."""

    by: Identifier = Field(description="User id of the approver.")
    at: datetime = Field(description="When (ISO 8601 with time zone).")
    config_hash: str | None = Field(
        None, description="Hash of the approved configuration; the launch gate checks it still matches."
    )

    @field_validator("at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("timestamp needs a time zone, e.g. 2026-10-01T09:00:00Z")
        return v


class AclRule(Section):
    """An ACL for the documents whose path (Git: path in the repository; web: URL path) matches a glob."""

    path: str = Field(
        min_length=1,
        description="Glob: `*` matches within one path segment, `**` across segments, e.g. "
        "`runbooks/payments/**` or `/internal/**`.",
    )
    acl: list[str] = Field(min_length=1, description="Tokens: `public`, `group:<id>`, `user:<id>`.")

    @field_validator("acl")
    @classmethod
    def _tokens(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not is_valid_token(t)]
        if bad:
            raise ValueError(f"invalid ACL token {bad[0]!r} (expected 'public', 'group:<id>' or 'user:<id>')")
        return v


_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


class SqlOptions(Section):
    """The `sql` connector: which rows are documents, and where their ACLs come from."""

    query: str | None = Field(
        None, description="A SELECT whose rows are documents (use `table` for a whole table)."
    )
    table: str | None = Field(None, description="A table whose rows are documents (instead of `query`).")
    id_column: str = Field("id", description="Column with the document id.")
    title_column: str | None = Field("title", description="Column with the title.")
    body_column: str = Field("body", description="Column with the text.")
    url_column: str | None = Field(None, description="Column with the document's URL, if any.")
    updated_column: str | None = Field(
        None,
        description="A column that grows when a row changes (`updated_at` timestamp or a change counter): "
        "only newer rows are read on incremental syncs.",
    )
    tombstone_column: str | None = Field(
        None, description="A boolean column; a true value deletes the document (rows may also disappear)."
    )
    acl_column: str | None = Field(
        None, description="Column with the ACL (a list or a comma-separated string of tokens)."
    )
    grants_query: str | None = Field(
        None,
        description="A SELECT returning (document id, principal) rows; the principal is a token "
        "(`group:x`, `user:y`, `public`) or, with `grants_kind`, a bare id.",
    )
    grants_kind: Literal["token", "user", "group"] = Field(
        "token", description="How to read `grants_query`'s second column."
    )
    password_env: str | None = Field(
        None, pattern=_ENV_NAME, description="Environment variable holding the database password."
    )
    url_env: str | None = Field(
        None,
        pattern=_ENV_NAME,
        description="Environment variable holding the whole SQLAlchemy URL (then `location` is only a label).",
    )

    @model_validator(mode="after")
    def _one_of_query_table(self) -> SqlOptions:
        if (self.query is None) == (self.table is None):
            raise ValueError("sql: give exactly one of 'query' or 'table'")
        if self.acl_column and self.grants_query:
            raise ValueError("sql: give at most one of 'acl_column' or 'grants_query'")
        return self


class GitOptions(Section):
    """The `git` connector."""

    branch: str = Field("main", description="Branch to read.")
    include: list[str] = Field(
        default_factory=lambda: ["**/*.md", "**/*.markdown", "**/*.txt", "**/*.html", "**/*.htm"],
        description="Globs of files that are documents.",
    )
    acl_file: str | None = Field(
        None,
        description="Per-folder ACL file name (e.g. `.acl`): applies to its folder and below (the nearest "
        "wins); where a charter `acl_rules` entry also matches, only tokens in both are kept.",
    )
    url_template: str | None = Field(
        None, description="Citation URL, e.g. `https://git.example/docs/blob/{commit}/{path}`."
    )


class WebOptions(Section):
    """The `web` connector."""

    sitemap: str | None = Field(None, description="Sitemap URL (else the crawl starts at `location`).")
    allowed_domains: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts the crawler may fetch, as `host` or `host:port` (default: the start URL's); on a host, "
            "ports other than 80/443 and the start URL's only as listed `host:port`."
        ),
    )
    allowed_paths: list[str] = Field(
        default_factory=lambda: ["/**"], description="Globs of URL paths to fetch."
    )
    max_depth: int = Field(3, ge=0, le=50, description="Links followed from the start URL.")
    max_pages: int = Field(10000, ge=1, description="Upper bound on pages per sync.")
    max_bytes: int = Field(5_000_000, ge=1024, description="Pages larger than this are skipped.")
    content_types: list[str] = Field(
        default_factory=lambda: ["text/html", "text/plain", "text/markdown"],
        description="Accepted content types.",
    )
    max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed per request.")
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight.")
    per_host_rps: float = Field(5.0, gt=0, le=1000, description="Requests per second per host.")
    timeout: Duration = Field("20s", description="Per-request timeout.")  # type: ignore[assignment]
    user_agent: str = Field("CharterBot/0.1", description="User-Agent (also the robots.txt agent).")


class Source(Section):
    """A data source and its governance metadata."""

    id: Identifier = Field(description="Stable source id.")
    title: str = Field("", description="Display name.")
    connector: Identifier = Field(description="Connector name: `folder`, `jsonl`, or one you registered.")
    location: str = Field(
        description="Where the connector reads from (path relative to the charter, or URL)."
    )
    owner: Identifier = Field(description="User id responsible for the source.")
    sensitivity: Sensitivity = Field(description="`public`, `internal`, `confidential` or `restricted`.")
    permissions: Permissions = Field(description="Permission model.")
    allowed_in_prompts: bool = Field(
        True, description="Whether chunks of this source may enter a model prompt."
    )
    freshness: Freshness = Field(description="Freshness policy.")
    cadence: str = Field(
        "daily", description="How often sync should run (documentation for schedulers), e.g. `hourly`."
    )
    chunking: Chunking = Field(default_factory=lambda: Chunking(), description="Chunking settings.")
    screening: Literal["exclude", "quarantine"] = Field(
        "exclude",
        description="What sync does with a document that carries instructions addressed to an assistant "
        "(prompt injection, `charter.screening`): `exclude` indexes it without those sentences; `quarantine` "
        "keeps it out of the index until the source owner approves that exact content "
        "(`charter sources approve`). Either way the owner is shown the document.",
    )
    approval: Approval | None = Field(None, description="Who approved this source for this workflow.")
    acl_rules: list[AclRule] = Field(
        default_factory=list,
        description="Git and web connectors: ACLs by path / URL pattern (the last matching rule wins).",
    )
    sql: SqlOptions | None = Field(None, description="Settings of the `sql` connector.")
    git: GitOptions | None = Field(None, description="Settings of the `git` connector.")
    web: WebOptions | None = Field(None, description="Settings of the `web` connector.")

    @model_validator(mode="after")
    def _connector_settings(self) -> Source:
        if self.connector == "sql" and self.sql is None:
            raise ValueError("connector 'sql' needs a 'sql' section (query or table)")
        if self.connector == "sql" and "://" in self.location:
            from urllib.parse import urlsplit

            if urlsplit(self.location).password:
                raise ValueError(
                    "the sql location must not contain a password: set sql.password_env "
                    "(or sql.url_env) to the name of an environment variable"
                )
        return self


# --------------------------------------------------------------------------------------------- retrieval
class Fusion(Section):
    """How lexical (BM25) and dense scores are combined."""

    method: Literal["adaptive", "weighted", "rrf"] = Field(
        "adaptive",
        description="`adaptive` (default: BM25 leads when the question names a code such as an order "
        "number or error code that a readable chunk contains, otherwise normalised scores weighted per query "
        "by how sharply the BM25 list singles out its best hits; no per-corpus tuning, see "
        "docs/retrieval.md), `weighted` (normalised "
        "scores with the fixed `bm25_weight` / `dense_weight`) or `rrf` (reciprocal-rank fusion).",
    )
    normalization: Literal["minmax", "zscore", "none"] = Field(
        "minmax",
        description="How each list's scores are normalised before weighting: `minmax` maps the "
        "`depth`-th best score to 0 and the best to 1; `zscore` uses the mean and deviation of the top `depth`.",
    )
    depth: int = Field(
        100,
        ge=1,
        le=10000,
        description="How many top results of each list set the normalisation statistics and the "
        "`adaptive` weights (and, for `rrf`, which ranks count).",
    )
    bm25_weight: float = Field(
        0.3, ge=0, le=1, description="Weight of the normalised BM25 score (method `weighted` only)."
    )
    dense_weight: float = Field(
        0.7, ge=0, le=1, description="Weight of the normalised dense score (method `weighted` only)."
    )
    rrf_k: int = Field(60, ge=1, description="k constant for reciprocal-rank fusion.")


class EmbeddingService(Section):
    """An OpenAI-compatible embeddings endpoint (OpenAI, vLLM, TEI, Ollama, llama.cpp server)."""

    endpoint: str = Field(description="Base URL, e.g. `http://127.0.0.1:8080/v1`.")
    model: str = Field(min_length=1, description="Model name as the service knows it.")
    api_key_env: str | None = Field(
        None, pattern=_ENV_NAME, description="Environment variable that holds the API key."
    )
    batch_size: int = Field(64, ge=1, le=2048, description="Texts per request.")
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight.")
    timeout: Duration = Field("60s", description="Per-request timeout.")  # type: ignore[assignment]
    retries: int = Field(3, ge=0, le=10, description="Retries on 429/5xx/network errors (backoff).")
    max_chars: int = Field(
        8000, ge=16, description="Texts are cut to this many characters before they are sent."
    )


class Retrieval(Section):
    """Search settings."""

    top_k: int = Field(8, ge=1, le=100, description="Chunks retrieved per question.")
    mode: Literal["hybrid", "bm25", "dense"] = Field(
        "hybrid",
        description="Ranking for questions and searches: `hybrid` (default: BM25 and dense scores fused, see "
        "`fusion`), `bm25` (lexical only: the question is not embedded, so a request costs no model pass) or "
        "`dense` (embeddings only). Documents are embedded at sync whatever the mode, so it can be switched "
        "without a re-sync. Every mode ranks only the chunks the asker may read.",
    )
    fusion: Fusion = Field(default_factory=lambda: Fusion(), description="Fusion of BM25 and dense scores.")
    min_score: float = Field(0.0, ge=0, le=1, description="Chunks scoring below this are dropped.")
    embedder: str = Field(
        "minilm",
        description="Embedder name (registry); default all-MiniLM-L6-v2, offline; `openai` uses "
        "`embeddings` (any OpenAI-compatible `/v1/embeddings` service).",
    )
    embeddings: EmbeddingService | None = Field(
        None, description="The embeddings service, with `embedder: openai`."
    )
    question_precision: Literal["float32", "bfloat16", "int8"] = Field(
        "float32",
        description="Precision of the question's embedding (documents are always embedded in float32): "
        "`float32` (default, exact), `bfloat16` (~1/3 less time, cosine >= 0.9999 to float32) or `int8` (~55 % "
        "less time, >= 0.98; ranks can change near ties). Checked on the machine when the first question is "
        "embedded; falls back to float32 (logged) where it fails or is not faster. Part of the fingerprint: "
        "evals measure what production runs. Built-in embedder only (docs/retrieval.md, Question precision).",
    )

    @model_validator(mode="after")
    def _service_settings(self) -> Retrieval:
        if self.embedder == "openai" and self.embeddings is None:
            raise ValueError("embedder 'openai' needs an 'embeddings' section (endpoint, model)")
        return self


# --------------------------------------------------------------------------------------------- model
class Prices(Section):
    """Prices in USD per 1,000 tokens."""

    input_per_1k: float = Field(0.0, ge=0, description="USD per 1,000 input tokens.")
    output_per_1k: float = Field(0.0, ge=0, description="USD per 1,000 output tokens.")


class ModelEndpoint(Section):
    """A model the gateway can call."""

    provider: Identifier = Field(description="`extractive`, `openai`, `local`, or a registered provider.")
    name: str = Field(description="Model name as the provider knows it.")
    endpoint: str | None = Field(None, description="Base URL for OpenAI-compatible providers.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Name of the environment variable that holds the API key (never the key itself).",
    )
    prices: Prices = Field(default_factory=lambda: Prices(), description="Per-token prices.")
    timeout: Duration = Field("30s", description="Per-call timeout.")  # type: ignore[assignment]
    retries: int = Field(2, ge=0, le=10, description="Retries on retryable errors, with exponential backoff.")
    max_output_tokens: int = Field(512, ge=1, le=32768, description="Upper bound on generated tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")


class Model(ModelEndpoint):
    """The primary model, and an optional fallback used when it fails or times out."""

    fallback: ModelEndpoint | None = Field(None, description="Model used when the primary fails.")


# --------------------------------------------------------------------------------------------- prompts
class PromptVersion(Section):
    """One version of a prompt."""

    version: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Version label, e.g. `v3`.")
    file: str = Field(description="Prompt file, relative to the charter.")
    approval: Approval | None = Field(None, description="The prompt owner's approval; required to be active.")


class Prompt(Section):
    """A versioned prompt. Only an approved version can be active."""

    name: Identifier = Field(description="Prompt name.")
    active: str = Field(description="The active version label.")
    versions: list[PromptVersion] = Field(min_length=1, description="All versions.")

    @model_validator(mode="after")
    def _active_exists(self) -> Prompt:
        labels = [v.version for v in self.versions]
        if len(set(labels)) != len(labels):
            raise ValueError("prompt versions must be unique")
        if self.active not in labels:
            raise ValueError(f"active version {self.active!r} is not among the versions {labels}")
        return self


# --------------------------------------------------------------------------------------------- tools
class RateLimit(Section):
    """At most `calls` per principal within `per`."""

    calls: int = Field(ge=1, description="Maximum calls.")
    per: Duration = Field(description="Window, e.g. `1m`.")


class ConditionalApproval(Section):
    """Approval needed when a condition over the arguments holds."""

    when: str = Field(
        description="Condition over `args` and `principal`, e.g. `amount > 100` (Cedar expression "
        "over `context.args` is generated from it)."
    )
    approver_role: Identifier = Field(description="Role whose member must approve.")


class ApprovalRule(Section):
    """When a tool call needs a human's approval, and whose."""

    rule: Literal["none", "always", "conditional"] = Field(
        "none", description="`none`, `always` or `conditional`."
    )
    approver_role: Identifier | None = Field(None, description="With `always`: who approves.")
    conditions: list[ConditionalApproval] = Field(
        default_factory=list,
        description="With `conditional`: the first condition that holds decides the approver role.",
    )
    expires_after: Duration = Field("24h", description="A pending approval expires after this.")  # type: ignore[assignment]

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalRule:
        if self.rule == "always" and not self.approver_role:
            raise ValueError("approval rule 'always' needs 'approver_role'")
        if self.rule == "conditional" and not self.conditions:
            raise ValueError("approval rule 'conditional' needs 'conditions'")
        if self.rule == "none" and (self.conditions or self.approver_role):
            raise ValueError("approval rule 'none' takes no 'conditions' or 'approver_role'")
        return self


def _approval_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"rule": value}
    return value


class UpstreamTool(Section):
    """Where an upstream MCP tool comes from: a server of the `mcp` section and the tool's name there."""

    server: Identifier = Field(description="Id of a server in `mcp.servers`.")
    tool: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.\-/]+$",
        description="The tool's name on the upstream server.",
    )


class Tool(Section):
    """A tool the model may propose and the system may run: a Python `callable` or an MCP `upstream` tool.

    Exactly one of the two; both kinds take the same declarations."""

    name: Identifier = Field(description="Tool name.")
    description: str = Field(
        "",
        description="What it does (shown to the model). For an upstream tool, empty means the pinned "
        "upstream description is shown, as data.",
    )
    callable: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="`module:function`; modules are resolved relative to the charter folder first.",
    )
    upstream: UpstreamTool | None = Field(
        None, description="An upstream MCP tool (`{server, tool}`) instead of a `callable`."
    )
    effect: Literal["read", "write", "external"] = Field(description="`read`, `write` or `external`.")
    roles: list[Identifier] = Field(min_length=1, description="Roles that may call the tool.")
    approval: Annotated[ApprovalRule, BeforeValidator(_approval_shorthand)] = Field(
        default_factory=lambda: ApprovalRule(), description="Approval rule: `none`, `always` or conditional."
    )
    rate_limit: RateLimit | None = Field(None, description="Per-principal rate limit.")
    requires: list[str] = Field(
        default_factory=list, description="Preconditions, e.g. `draft_approved` for sending a reply."
    )
    subject_argument: Identifier | None = Field(
        None,
        description="The argument that names whom the conversation is about (a client, an employee, a "
        "case): with `requires: [draft_approved]` the call must name the approved draft's subject, so a "
        "reply reaches only the party it was written for. Tools also get the conversation's subject as "
        "`ToolContext.subject_id` to scope their data.",
    )

    @model_validator(mode="after")
    def _one_implementation(self) -> Tool:
        if (self.callable is None) == (self.upstream is None):
            raise ValueError("a tool needs exactly one of 'callable' (a Python function) or 'upstream'")
        return self


# --------------------------------------------------------------------------------------------- mcp
class McpServer(Section):
    """An upstream MCP server whose tools the charter may expose (`tools[].upstream`).

    Its descriptions and schemas are data: what a tool may do is decided by the charter's tool entry alone."""

    id: Identifier = Field(description="Server id, referenced by `tools[].upstream.server`.")
    command: list[str] | None = Field(
        None,
        min_length=1,
        description="Launch over stdio: the command and its arguments, e.g. `[uvx, mcp-server-git]`.",
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Or connect over streamable HTTP to this URL.",
    )
    env: dict[Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")], str] = Field(
        default_factory=dict,
        description="stdio: environment of the server process: variable name → the name of a variable of "
        "Charter's own environment that holds the value (never the value itself).",
    )
    token_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="HTTP: name of the environment variable holding the bearer token sent upstream.",
    )
    cwd: str | None = Field(None, description="stdio: working folder (relative to the charter).")
    owner: Identifier = Field(
        description="User notified (audit and log) when an upstream tool changes and is disabled."
    )
    timeout: Duration = Field("30s", description="Per-call timeout; a call that takes longer is cut off.")  # type: ignore[assignment]
    connect_timeout: Duration = Field(  # type: ignore[assignment]
        "30s", description="How long starting (stdio) or reaching (HTTP) the server may take."
    )
    max_result_chars: int = Field(
        100_000, ge=100, le=10_000_000, description="Longer results are cut to this many characters."
    )
    pin_recheck: Duration = Field(  # type: ignore[assignment]
        "5s",
        description="How long a comparison of the live tool listing with the pins stays fresh: a call "
        "after that re-lists the tools first; a `tools/list_changed` notification (or a reconnect) "
        "makes it stale at once. `0s`: compare before every call.",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server needs exactly one of 'command' (stdio) or 'url' (HTTP)")
        if self.command is None and (self.env or self.cwd):
            raise ValueError("'env' and 'cwd' apply to stdio servers ('command') only")
        if self.url is None and self.token_env:
            raise ValueError("'token_env' applies to HTTP servers ('url') only")
        if self.pin_recheck.total_seconds() > 3600:
            raise ValueError("'pin_recheck' must be at most 1h (a changed upstream stays callable that long)")
        return self


class Mcp(Section):
    """Model Context Protocol: the upstream servers the charter's tools may come from."""

    servers: list[McpServer] = Field(default_factory=list, description="Upstream MCP servers.")

    def server(self, server_id: str) -> McpServer:
        for s in self.servers:
            if s.id == server_id:
                return s
        raise KeyError(server_id)


# --------------------------------------------------------------------------------------------- review
class Escalation(Section):
    """Who gets a draft or an action when a rule fires, and how long they have."""

    when: Literal[
        "no_sources",
        "low_groundedness",
        "out_of_scope",
        "sensitive_topic",
        "canary_in_output",
        "pii_in_output",
        "agent_stopped",
        "approval_sla",
        "always",
    ] = Field(
        description="Trigger. `agent_stopped`: an `agent` run stopped by a limit (steps, time, budget, loop, "
        "kill switch) or a failure."
    )
    to: Identifier = Field(description="Role that receives it.")
    sla: Duration = Field(description="Time to act before it escalates further.")
    then: Identifier | None = Field(None, description="Role it moves to when the SLA passes.")


class Review(Section):
    """Human review of drafts and escalation rules."""

    drafts: Literal["all", "escalated", "none"] | None = Field(
        None,
        description="Which outputs go to the review queue: `all`, `escalated` or `none`. Default per "
        "workflow kind: `all` for `draft`, `escalated` for `answer` and `agent` (`Charter.review_drafts`).",
    )
    reviewer_role: Identifier = Field(description="Role that reviews drafts.")
    groundedness_threshold: float = Field(0.6, ge=0, le=1, description="Below this, the draft escalates.")
    grounding: Literal["required", "optional"] = Field(
        "required",
        description="`required`: every sentence of an answer must cite a passage retrieved for the request "
        "and be supported by it, and an answer without a valid citation escalates (`no_sources`). "
        "`optional`: the model's own, uncited sentences may stand in an answer (a governed model gateway, or a "
        "workflow without sources); cited sentences must still be supported by what they cite, and every "
        "other check applies. The launch gate reports it (docs/pipeline.md, *Grounding*).",
    )
    sensitive_topics: list[str] = Field(default_factory=list, description="Topics that always go to a human.")
    outbound_sensitivity: list[Literal["public", "internal", "confidential", "restricted"]] = Field(
        default_factory=lambda: ["public"],  # type: ignore[arg-type]
        description="`draft` workflows: sensitivities that may be quoted in the outbound draft; passages of "
        "other sources become internal notes. `answer` workflows ignore it (the asker sees what they may read).",
    )
    escalations: list[Escalation] = Field(default_factory=list, description="Escalation rules.")
    tone: str = Field(
        "",
        description="`draft` workflows: tone template (greeting, `{body}`, sign-off; `{recipient}` and `{sender}` "
        "are filled in). `answer` workflows ignore it.",
    )
    senders: list[Identifier] = Field(
        default_factory=list,
        description="Roles that may send any approved draft (`draft_approved` tools); others only their own.",
    )

    @field_validator("tone")
    @classmethod
    def _tone_placeholders(cls, v: str) -> str:
        unknown = sorted(set(re.findall(r"\{(\w*)\}", v)) - set(TONE_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"unknown placeholder {', '.join('{' + u + '}' for u in unknown)} in the tone; the tone knows "
                + ", ".join("{" + t + "}" for t in TONE_PLACEHOLDERS)
                + " (who the output is addressed to, who sends it)"
            )
        return v


#: What ``review.tone`` may contain in braces: where the body goes, the recipient's and the sender's name.
TONE_PLACEHOLDERS = ("body", "recipient", "sender")


# --------------------------------------------------------------------------------------------- agent
class AgentLimits(Section):
    """`agent` workflows: how far one task may go. Every tool call is a proposal decided by the tools layer
    (tool list, Cedar, arguments, kill switch, preconditions, rate limit, approval); these limits stop a run
    that goes on too long. The cost of a task is limited by `budgets.per_task_usd` over all its steps."""

    max_steps: int = Field(
        8, ge=1, le=100, description="Model steps per task; a run still calling tools after that stops."
    )
    max_duration: Duration = Field(  # type: ignore[assignment]
        "5m",
        description="Working time per task (waiting for an approval does not count; the approval's own "
        "`expires_after` bounds the wait). Checked between steps.",
    )
    max_calls_per_step: int = Field(
        5, ge=1, le=50, description="Tool calls one model step may ask for; more are refused."
    )
    repeat_limit: int = Field(
        2,
        ge=1,
        le=20,
        description="How many times the same call (tool and arguments) may be asked for in one task; one "
        "more stops the run as a loop.",
    )


# --------------------------------------------------------------------------------------------- budgets
class Budgets(Section):
    """Cost limits, enforced by reservation before each model call."""

    per_task_usd: float = Field(ge=0, description="Maximum cost of one request.")
    monthly_usd: float = Field(ge=0, description="Maximum spend per calendar month (UTC).")
    expected_monthly_requests: int = Field(ge=0, description="Expected volume, for projections.")
    peak_rps: float = Field(1.0, ge=0, description="Expected peak requests per second.")


class Latency(Section):
    """Latency targets for a whole request."""

    p50_ms: float = Field(gt=0, description="Median target in milliseconds.")
    p95_ms: float = Field(gt=0, description="95th-percentile target in milliseconds.")


class Limits(Section):
    """Input limits enforced at admission."""

    max_question_chars: int = Field(4000, ge=1, description="Longest accepted question.")
    max_upload_bytes: int = Field(10_000_000, ge=1, description="Largest accepted upload.")


# --------------------------------------------------------------------------------------------- monitoring
FieldPolicy = Literal["raw", "masked", "hashed", "dropped"]


class Exporters(Section):
    """Where telemetry goes."""

    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP endpoint for traces, e.g. http://collector:4318."
    )
    prometheus: bool = Field(True, description="Expose /metrics.")
    include_content: bool = Field(False, description="Export (masked) message content in spans.")


class AuditSettings(Section):
    """How often the audit log's head is signed: this bounds the unsigned tail (docs/security.md)."""

    checkpoint_every: int = Field(
        1000, ge=1, le=1_000_000, description="Sign a checkpoint at least every this many audit entries."
    )
    checkpoint_interval: Duration = Field(  # type: ignore[assignment]
        "5m",
        description="The server also signs the head this often when entries arrived since the last checkpoint.",
    )


class Monitoring(Section):
    """What is recorded and how it is protected."""

    fields: dict[str, FieldPolicy] = Field(
        default_factory=lambda: {"question": "masked", "answer": "masked", "principal": "hashed"},  # type: ignore[arg-type]
        description="Per-field policy: `raw`, `masked`, `hashed` or `dropped`.",
    )
    masking: Literal["presidio", "presidio+spacy", "off"] = Field(
        "presidio", description="Masker: Presidio pattern recognizers (default), with spaCy NER, or off."
    )
    retention: Duration = Field("90d", description="Traces and feedback older than this are deleted.")  # type: ignore[assignment]
    exporters: Exporters = Field(default_factory=lambda: Exporters(), description="Exporters.")
    canaries: list[str] = Field(
        default_factory=list,
        description="Extra canary token patterns (regular expressions). The built-in pattern, which matches "
        "`CANARY`-style tokens with any prefix (`CANARY-FIN-7d3a91`, `ACME-CANARY-2f9c`), always applies; "
        "these add to it. Used by the check stage, the eval scorers and masking.",
    )

    audit: AuditSettings = Field(
        default_factory=lambda: AuditSettings(),
        description="Audit checkpoint cadence (bounds the unsigned tail).",
    )

    @field_validator("canaries")
    @classmethod
    def _canaries_compile(cls, value: list[str]) -> list[str]:
        from charter.canaries import validate_pattern

        try:
            return [validate_pattern(p) for p in value]
        except UsageError as exc:
            raise ValueError(str(exc)) from None


# --------------------------------------------------------------------------------------------- owners
class Owners(Section):
    """Who is responsible for each duty. Every value is a user id that must exist and be active."""

    sources: Identifier = Field(description="Sources and their permissions.")
    failures: Identifier = Field(description="Failure review and quality.")
    prompt_changes: Identifier = Field(description="Approves prompt versions.")
    cost: Identifier = Field(description="Budget and cost.")
    incidents: Identifier = Field(description="Incidents and the kill switch.")
    scope: Identifier = Field(description="The workflow's scope.")


# --------------------------------------------------------------------------------------------- evals
class Threshold(Section):
    """A metric that must reach a value for the eval (and the gate) to pass."""

    metric: str = Field(description="`area.metric`, e.g. `retrieval.recall@5`.")
    op: Comparator = Field(description="Comparison.")
    value: float = Field(description="Target value.")
    bound: Literal["point", "lower", "upper"] = Field(
        "point", description="Compare the point estimate or a 95% confidence bound."
    )

    def passes(self, observed: float) -> bool:
        if math.isnan(observed):
            return False
        return {
            ">=": observed >= self.value,
            "<=": observed <= self.value,
            ">": observed > self.value,
            "<": observed < self.value,
            "==": observed == self.value,
        }[self.op]

    def __str__(self) -> str:
        b = "" if self.bound == "point" else f" ({self.bound})"
        return f"{self.metric} {self.op} {self.value:g}{b}"


class Evals(Section):
    """Evaluation sets and thresholds."""

    sets: list[str] = Field(default_factory=list, description="Eval set files, relative to the charter.")
    thresholds: list[Annotated[Threshold, BeforeValidator(parse_threshold)]] = Field(
        default_factory=list, description="E.g. `retrieval.recall@5 >= 0.9`, `permission.leaks == 0`."
    )
    max_age: Duration = Field("7d", description="The gate ignores eval runs older than this.")  # type: ignore[assignment]
    min_cases: dict[str, int] = Field(
        default_factory=lambda: {"normal": 10, "edge": 5, "negative": 5, "permission": 5},
        description="Minimum cases per category for the gate.",
    )


class Alerts(Section):
    """Alert conditions the drift loop evaluates (the same as ``deploy/prometheus/charter-alerts.yaml``)."""

    enabled: bool = Field(
        True, description="Evaluate the alerts on every drift pass and notify `drift.notify`."
    )
    budget_projection_ratio: float = Field(
        1.0,
        gt=0,
        description="Alert when this month's projected spend exceeds this share of `budgets.monthly_usd`.",
    )
    budget_min_elapsed: Duration = Field(  # type: ignore[assignment]
        "1d", description="Project from at least this much of the month (one early request is not a trend)."
    )
    escalation_window: Duration = Field("1h", description="Recent window for the escalation spike.")  # type: ignore[assignment]
    escalation_baseline: Duration = Field(  # type: ignore[assignment]
        "7d", description="Trailing baseline (before the recent window) the spike is compared with."
    )
    escalation_factor: float = Field(
        2.0, gt=1, description="Spike: a reason's recent rate is at least this many times its baseline rate."
    )
    escalation_min_count: int = Field(
        5, ge=1, description="…and at least this many escalations in the window."
    )
    latency_objective: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Share of served requests that must be faster than `latency.p95_ms` (SLO).",
    )


class Drift(Section):
    """What happens when a post-launch check regresses, and which alerts are evaluated without Prometheus."""

    notify: str | None = Field(None, description="Webhook URL or `log`.")
    on_regression: Literal["notify", "restrict", "kill"] = Field(
        "notify", description="Only notify, restrict (every draft needs review) or turn on the kill switch."
    )
    alerts: Alerts = Field(default_factory=lambda: Alerts(), description="Alert conditions.")


# --------------------------------------------------------------------------------------------- root
class Charter(Section):
    """A workflow's charter. Every section is required unless marked optional."""

    version: Literal[1] = Field(1, description="Charter format version.")
    workflow: Workflow
    scope: Scope
    identity: Identity = Field(default_factory=lambda: Identity())
    roles: dict[Identifier, Role] = Field(min_length=1, description="Roles by id.")
    sources: list[Source] = Field(default_factory=list, description="Data sources.")
    retrieval: Retrieval = Field(default_factory=lambda: Retrieval())
    model: Model
    prompts: list[Prompt] = Field(default_factory=list, description="Versioned prompts.")
    tools: list[Tool] = Field(default_factory=list, description="Tools.")
    agent: AgentLimits = Field(
        default_factory=lambda: AgentLimits(), description="`agent` workflows: step, time and loop limits."
    )
    mcp: Mcp = Field(default_factory=lambda: Mcp(), description="Upstream MCP servers (tool sources).")
    review: Review
    budgets: Budgets
    latency: Latency
    limits: Limits = Field(default_factory=lambda: Limits())
    monitoring: Monitoring = Field(default_factory=lambda: Monitoring())
    owners: Owners
    evals: Evals = Field(default_factory=lambda: Evals())
    policies: list[str] = Field(
        default_factory=list, description="Custom Cedar policy files, relative to the charter."
    )
    drift: Drift = Field(default_factory=lambda: Drift())

    @model_validator(mode="after")
    def _unique_ids(self) -> Charter:
        for name, items in (
            ("sources", [s.id for s in self.sources]),
            ("tools", [t.name for t in self.tools]),
            ("prompts", [p.name for p in self.prompts]),
            ("mcp servers", [s.id for s in self.mcp.servers]),
        ):
            dupes = sorted({i for i in items if items.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {name}: {', '.join(dupes)}")
        servers = {s.id for s in self.mcp.servers}
        for t in self.tools:
            if t.upstream is not None and t.upstream.server not in servers:
                raise ValueError(
                    f"tool {t.name!r}: upstream server {t.upstream.server!r} is not declared in mcp.servers"
                )
        return self

    @property
    def review_drafts(self) -> Literal["all", "escalated", "none"]:
        """``review.drafts``, or the workflow kind's default: ``all`` for ``draft``, else ``escalated``."""
        if self.review.drafts is not None:
            return self.review.drafts
        return "all" if self.workflow.kind == "draft" else "escalated"

    @property
    def output_to_asker(self) -> bool:
        """The audience rule of the workflow kind: ``answer`` and ``agent`` outputs go back to the asker, who
        may see every passage they may read (no outbound/internal split, no tone); a ``draft`` goes to a
        third party."""
        return self.workflow.kind != "draft"

    @property
    def system_prompt(self) -> str | None:
        """Name of the prompt bound to the ``system`` purpose: ``workflow.prompts.system``, else the only
        prompt, else None (no prompt; with several prompts and no binding ``charter check`` refuses)."""
        bound = self.workflow.prompts.system
        if bound is not None:
            return bound
        return self.prompts[0].name if len(self.prompts) == 1 else None

    def scope_for(self, roles: Iterable[str]) -> RoleScopeView:
        """The scope that applies to a principal holding ``roles`` (see :class:`RoleScope` for how several
        roles combine). Roles the charter does not define add nothing."""
        own = [self.roles[r].scope for r in roles if r in self.roles]
        lifted_out = {t for rs in own for t in rs.allowed_topics}
        lifted_sensitive = {t for rs in own for t in rs.not_sensitive}
        extra_out = [t for rs in own for t in rs.out_of_scope]
        extra_sensitive = [t for rs in own for t in rs.sensitive_topics]
        escalations: dict[str, Escalation] = {}
        for rs in own:
            for e in rs.escalations:
                escalations.setdefault(e.when, e)
        for e in self.review.escalations:
            escalations.setdefault(e.when, e)
        return RoleScopeView(
            out_of_scope=_unique([*(t for t in self.scope.out_of_scope if t not in lifted_out), *extra_out]),
            sensitive_topics=_unique(
                [*(t for t in self.review.sensitive_topics if t not in lifted_sensitive), *extra_sensitive]
            ),
            escalations=escalations,
        )

    def source(self, source_id: str) -> Source:
        for s in self.sources:
            if s.id == source_id:
                return s
        raise KeyError(source_id)

    def tool(self, name: str) -> Tool:
        for t in self.tools:
            if t.name == name:
                return t
        raise KeyError(name)

    def prompt(self, name: str) -> Prompt:
        for p in self.prompts:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class RoleScopeView:
    """The scope one principal's request is checked against (:meth:`Charter.scope_for`)."""

    out_of_scope: tuple[str, ...]
    sensitive_topics: tuple[str, ...]
    escalations: dict[str, Escalation]  # trigger -> the rule that routes it


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


RoleScope.model_rebuild()
Role.model_rebuild()


# --------------------------------------------------------------------------------------------- users file
class User(Section):
    """A person."""

    id: Identifier = Field(description="Stable user id.")
    name: str = Field(description="Display name.")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="Contact address.")
    groups: list[Identifier] = Field(default_factory=list, description="Group ids (ACL tokens `group:<id>`).")
    roles: list[Identifier] = Field(default_factory=list, description="Role ids from the charter.")
    active: bool = Field(True, description="Inactive users cannot authenticate or own anything.")


class ServiceAccount(Section):
    """A non-human principal (an integration)."""

    id: Identifier = Field(description="Stable id.")
    name: str = Field(description="Display name.")
    owner: Identifier = Field(description="User responsible for it.")
    groups: list[Identifier] = Field(default_factory=list)
    roles: list[Identifier] = Field(default_factory=list)
    active: bool = True


class Group(Section):
    """A group of users."""

    id: Identifier
    name: str = ""


class UsersFile(Section):
    """The users file named by `identity.users_file`."""

    groups: list[Group] = Field(default_factory=list)
    users: list[User] = Field(default_factory=list)
    service_accounts: list[ServiceAccount] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> UsersFile:
        ids = [u.id for u in self.users] + [s.id for s in self.service_accounts]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate principal ids: {', '.join(dupes)}")
        return self
