//! One module per subcommand.

pub mod alerts;
pub mod canary;
pub mod capacity;
pub mod demo;
pub mod detect;
pub mod generate;
pub mod learn;
pub mod load;
pub mod mask;
pub mod profiles;
pub mod proxy;
pub mod report;
