"""Small matplotlib helpers: figures as PNG bytes and as Markdown for Dagster metadata."""

import base64
import io

import polars as pl


def figure_png(fig) -> bytes:
    """Render and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG embedded in Markdown (the Dagster UI renders it)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def training_curves_png(history: pl.DataFrame, title: str) -> bytes:
    """Train and validation loss per epoch, one line pair per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (seed,), part in history.group_by("seed", maintain_order=True):
        ax.plot(part["epoch"], part["train_loss"], "--", label=f"train (seed {seed})")
        ax.plot(part["epoch"], part["val_loss"], "-", label=f"validation (seed {seed})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return figure_png(fig)
