//! One module per subcommand.

pub mod demo;
pub mod generate;
pub mod learn;
pub mod load;
pub mod profiles;
pub mod proxy;
