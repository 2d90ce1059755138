"""HF <-> Megatron models: config translation, the one name map, checkpoint I/O."""
