"""metacog.core: what every stage shares — frozen settings and their stable hash
(:mod:`metacog.core.settings`), the workspace store, the only writer into a workspace
(:class:`metacog.core.workspace.Workspace`), pickle-free training state
(:mod:`metacog.core.safestate`), progress and cooperative stop (:mod:`metacog.core.runtime`)
and background jobs in a thread or their own process (:mod:`metacog.core.jobs`).

The one public entry is :class:`metacog.core.workspace.Workspace`; the package itself
re-exports nothing.
"""
