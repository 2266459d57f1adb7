"""Stage implementations. Each is a `mixforge.stage.Stage` over Arrow tables."""
