"""Pictures of event data: frames with boxes (:mod:`.draw`) and videos of them (:mod:`.video`)."""
