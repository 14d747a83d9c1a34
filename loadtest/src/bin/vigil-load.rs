//! `vigil-load`: goose load tests of Vigil's HTTP API. Goose's flags (`--help`) plus
//! `VIGIL_LOAD_*` variables; see loadtest/README.md.

use goose::GooseError;
use vigil_loadtest::scenarios::{self, Settings};

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("vigil-load: {message}");
            std::process::exit(2);
        }
    };
    scenarios::attack(settings)?.execute().await?;
    Ok(())
}
