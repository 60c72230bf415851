"""The CLI's look-and-plan subcommands: versions, show, diff, plan, config, gc.

Each reads what the library already records (version manifests and cards, stage reports) through
`pipeline.versions`, `pipeline.plan` and `pipeline.gc`, and prints it for a person (or as JSON with
`--json`). Exit codes: 0 done (also when a plan redoes stages or two versions differ), 2 a bad config,
option or tag.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from gistforge.cli import resolve_config, say

EXIT_OK, EXIT_USAGE = 0, 2


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _setup(args: argparse.Namespace):
    """(config, deployment) for the command's --config/--profile/--home/--target."""
    from assets.settings import Deployment

    cfg = resolve_config(args)
    deployment = Deployment.from_env(home=args.home)
    if getattr(args, "target", None):
        deployment = deployment.model_copy(update={"publish_target": args.target})
    return cfg, deployment


def _store(cfg, deployment):
    from pipeline.versions import HubVersions, LocalVersions

    if deployment.publish_target == "hub":
        from huggingface_hub import HfApi

        return HubVersions(HfApi(endpoint=deployment.hub_endpoint), cfg.dataset_repo_id)
    return LocalVersions(deployment.local_hub or deployment.home / "hub", cfg.dataset_repo_id)


def _print_json(model: Any) -> None:
    data = model.model_dump(mode="json") if hasattr(model, "model_dump") else model
    print(json.dumps(data, indent=2, sort_keys=True))


# ---------------------------------------------------------------------------------------------- versions

def versions(args: argparse.Namespace) -> int:
    from pipeline.versions import list_versions

    cfg, deployment = _setup(args)
    store = _store(cfg, deployment)
    found = list_versions(store)
    if args.json:
        _print_json([v.model_dump(mode="json") for v in found])
        return EXIT_OK
    if not found:
        print(f"no published version of {cfg.dataset_repo_id} in {store.where}: run `gistforge build`")
        return EXIT_OK
    print(f"{cfg.dataset_repo_id} in {store.where}, newest first:\n")
    print(_table(["tag", "date", "rows", "tasks", "content hash", "main"],
                 [[v.tag, v.date, v.rows, v.tasks, v.content_hash[:16], "<- main" if v.main else ""] for v in found]))
    return EXIT_OK


def show(args: argparse.Namespace) -> int:
    from pipeline.versions import show as show_version

    cfg, deployment = _setup(args)
    d = show_version(_store(cfg, deployment), args.tag)
    if args.json:
        _print_json(d)
        return EXIT_OK
    print(f"{cfg.dataset_repo_id}@{d.tag}{'  (main)' if d.main else ''}")
    print(f"published {d.date}, {d.rows} rows in {d.tasks} task types, {d.files} files ({_human(d.bytes)}), "
          f"content hash {d.content_hash}")
    print(f"made on {d.previous_tag or 'nothing (first version)'}\n")
    print("rows per task:")
    print(_table(["task_type", "task_name", "rows"], [[t.task_type, t.task_name, t.rows] for t in d.per_task]))
    print("\nsources:")
    print(_table(["source", "repo / file", "resolved commit", "licence", "rows in", "rows out"],
                 [[s.get("source"), s.get("repo / file"), s.get("resolved commit") or "(local file)", s.get("licence"),
                   s.get("rows in"), s.get("rows out")] for s in d.sources]))
    print("\ndrops by reason:")
    if d.drops:
        print(_table(["stage / source", "rows in", "dropped", "by reason"],
                     [[r.get("stage / source"), r.get("rows in"), r.get("dropped"), r.get("drops by reason")]
                      for r in d.drops]))
    else:
        print("no rows dropped")
    print(f"\nguide: {d.guide.get('name', '?')} at {d.guide.get('revision', '?')}")
    print("mining: " + ", ".join(f"{k}={v}" for k, v in d.mining.items()))
    return EXIT_OK


def diff(args: argparse.Namespace) -> int:
    from pipeline.versions import diff as diff_versions

    cfg, deployment = _setup(args)
    d = diff_versions(_store(cfg, deployment), args.a, args.b)
    if args.json:
        _print_json(d)
        return EXIT_OK
    print(f"{cfg.dataset_repo_id}: {d.a} -> {d.b}\n")
    print(_table(["task_type", "task_name", "added", "removed", "kept"],
                 [[r.task_type, r.task_name, r.added, r.removed, r.kept] for r in d.rows]))
    total = [sum(getattr(r, k) for r in d.rows) for k in ("added", "removed", "kept")]
    print(f"\ntotal: {total[0]} added, {total[1]} removed, {total[2]} kept")
    print("\nsettings that differ:" if d.settings else "\nsettings: the same")
    for name, (a, b) in d.settings.items():
        print(f"  {name}: {a} -> {b}")
    print("source commits that differ:" if d.sources else "source commits: the same")
    for name, (a, b) in d.sources.items():
        print(f"  {name}: {a or '(none)'} -> {b or '(none)'}")
    return EXIT_OK


# -------------------------------------------------------------------------------------------------- plan

def plan(args: argparse.Namespace) -> int:
    from pipeline.plan import plan_build
    from pipeline.road.publish import HUB, Location

    cfg, deployment = _setup(args)
    included = [t.name for t in cfg.included_tasks]
    unknown = sorted(set(args.tasks or []) - set(included))
    if unknown:
        say(f"unknown or excluded task partition(s) {unknown}; included: {included}")
        return EXIT_USAGE
    store = _store(cfg, deployment)

    def published() -> tuple[dict[str, str], str | None]:
        from pipeline.versions import list_versions

        found = list_versions(store)
        return {v.content_hash: v.tag for v in found}, next((v.tag for v in found if v.main), None)

    location = HUB if deployment.publish_target == "hub" else \
        Location(local_hub=str(deployment.local_hub or deployment.home / "hub"))
    result = plan_build(deployment.workspace(cfg), cfg, guide_device=deployment.guide_device, tasks=args.tasks,
                        finetune=not args.no_finetune, published=published, location=location)
    if args.json:
        _print_json(result)
        return EXIT_OK
    word = {"reuse": "reuse", "redo": "REDO", "fails": "FAILS"}
    print(_table(["stage", "partition", "plan", "why"],
                 [[s.asset, s.partition or "", word[s.status], "; ".join(s.reasons)] for s in result.stages]))
    redo, fails = result.redo, result.fails
    print(f"\n{len(result.stages) - len(redo) - len(fails)} of {len(result.stages)} reused; "
          + (f"{len(redo)} redone: {', '.join(redo)}" if redo else "nothing to redo")
          + (f"; {len(fails)} would fail: {', '.join(fails)}" if fails else ""))
    return EXIT_OK


# ------------------------------------------------------------------------------------------- config, gc

def config(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.config import BuildConfig

    if args.schema:
        print(json.dumps(BuildConfig.model_json_schema(), indent=2))
        return EXIT_OK
    if args.action != "show":
        say("say `gistforge config show` or `gistforge config --schema`")
        return EXIT_USAGE

    cfg = resolve_config(args)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return EXIT_OK


def gc(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from gistforge.orphans import build_lock
    from pipeline import gc as gc_lib
    from pipeline.road.local_hub import LocalHub

    cfg, deployment = _setup(args)
    ws = deployment.workspace(cfg)
    hub = None if deployment.publish_target == "hub" else LocalHub(deployment.local_hub or deployment.home / "hub")
    with build_lock(deployment.home, say) if args.delete else nullcontext():  # no build changes what it removes
        items = gc_lib.collect(ws, cfg, hub, keep=args.keep)
        print(_table(["kind", "size", "action", "path", "why"],
                     [[i.kind, _human(i.bytes), ("remove" if args.delete else "would remove") if i.remove else "keep",
                       i.path, i.why] for i in items]))
        removable = sum(i.bytes for i in items if i.remove)
        if args.delete:
            freed = gc_lib.remove(items, hub, cfg.dataset_repo_id)
            print(f"\nremoved {_human(freed)}")
        else:
            print(f"\n{_human(removable)} removable of {_human(sum(i.bytes for i in items))}; "
                  "dry run: `gistforge gc --delete` removes it")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "versions": versions, "show": show, "diff": diff, "plan": plan, "config": config, "gc": gc}


def dispatch(args: argparse.Namespace) -> int:
    """Run a look-and-plan subcommand; a bad config or tag is one line on stderr and exit 2."""
    from pipeline.profiles import ConfigError
    from pipeline.versions import VersionError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, VersionError) as exc:
    
        for line in str(exc).strip().splitlines():
            say(line)
        return EXIT_USAGE
