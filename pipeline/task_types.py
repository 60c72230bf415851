"""The `task_type` rule, declared once: `medi` for MEDI rows, `mteb_<slug>` for MTEB tasks and only them,
`local_<slug>` for a user's labelled files. The registry, `TaskSource.task_type` (every mined row) and the
build's checks read it here."""

from pipeline.common.text import slug

MEDI = "medi"
MTEB_PREFIX = "mteb_"
LOCAL_PREFIX = "local_"


def mteb(task_slug: str) -> str:
    """An MTEB task's `task_type`, from its registry slug."""
    return MTEB_PREFIX + task_slug


def local(name: str) -> str:
    """A local labelled file's `task_type`, from its task name (`FooBar`, `foo_bar`, `Foo.Bar` -> `local_foo_bar`)."""
    return LOCAL_PREFIX + slug(name)
