"""One mirror run: shared types (``types``), the pure planner (``plan``), the run's
listing on disk (``listed``), worker threads (``work``), placing and renames (``commit``),
removals (``removals``) and the run itself (``run``).
"""
