//! placeholder
pub struct FakeBmc;
pub struct FakePower;
