"""Multi-teacher distillation: teachers, the candidate cache, and the min-CE objective.

``loki distill build --config experiments/distill/<name>.yaml`` writes the cache; the
``callbacks.distillation.TeacherDistillation`` callback trains on it every Nth step.
``loki distill synthetic`` writes machine-generated training text. Every teacher output on its
way to the loss passes the one benchmark check in ``loki.distill.leaks``.
"""
