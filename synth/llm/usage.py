"""Usage accounting helpers: prices → cost, and the summary table printed at the end of a command."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from synth.llm.base import UsageTotals


class Prices(BaseModel):
    """Price per 1M tokens, in the currency of your bill (e.g. USD), from the provider's price page."""

    model_config = ConfigDict(extra="forbid")
    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


def usage_table(usage: UsageTotals, title: str = "LLM usage"):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    for name in ("requests", "cached", "retries", "failures", "prompt tokens", "completion tokens", "cost"):
        table.add_column(name, justify="right")
    cost = "-" if usage.cost is None else f"{usage.cost:,.4f}"
    table.add_row(f"{usage.requests:,}", f"{usage.cached:,}", f"{usage.retries:,}", f"{usage.failures:,}",
                  f"{usage.prompt_tokens:,}", f"{usage.completion_tokens:,}", cost)
    return table


def print_usage(usage: UsageTotals, console=None, title: str = "LLM usage") -> None:
    """Print the usage summary (to stderr by default, so piped output stays clean)."""
    if console is None:
        from synth.progress import console
    console.print(usage_table(usage, title))
