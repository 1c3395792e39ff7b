// Placeholder until the comm layer lands (being written).
