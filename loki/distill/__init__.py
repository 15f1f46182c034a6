"""Multi-teacher distillation: teachers, the candidate cache, and the min-CE objective.

``loki distill build --config experiments/distill/<name>.yaml`` writes the cache; the
``callbacks.distillation.TeacherDistillation`` callback trains on it every Nth step.
"""
