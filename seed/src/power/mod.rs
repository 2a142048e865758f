//! Power drivers: how the seed turns machines on and off and picks their boot device.
