"""A randomized fault run against a real agent-runner deployment, in Jepsen's style: a seeded
schedule, a nemesis, a recorded history, and a checker of the README's promises.

``python -m chaos --minutes M --seed S`` (see :mod:`chaos.__main__`); the checker is a pure
function of a history and the processes' log lines (:func:`chaos.checker.check`).
"""
