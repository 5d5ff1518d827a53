"""First stages: the kinds (:mod:`.kinds`), their faiss structures (:mod:`.structures`) and
``--first-stage auto`` (:mod:`.auto`)."""
