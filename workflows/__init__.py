"""Deterministic workflow code only: a run on its slot (agent_run), a scope's coordinator
(scope), the deployment's settings record (settings), and the pure decision code they use
(scope_book, attempt_book). Nothing is imported here: the workflow sandbox imports a run's
module afresh for every execution, and should import only that one."""
