"""The cleanup-workspace stage: empty the workspace, dotfiles included."""

from .context import StageContext


def run(context: StageContext) -> None:
    removed = context.workspace.cleanup()
    # The record lived in the workspace too: start a fresh one, keeping this run's parameters.
    params = context.record.get("params")
    context.record.data = {k: v for k, v in context.record.data.items() if k in ("version", "modelcar")}
    context.record.data["stages"] = {}
    context.record.set("params", params)
    context.ui.info(f"cleanup-workspace: removed {removed} entries from {context.workspace.root}")
