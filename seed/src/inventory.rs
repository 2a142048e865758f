//! The inventory: nodes, their MACs, BMCs, properties and capabilities; instackenv import.
