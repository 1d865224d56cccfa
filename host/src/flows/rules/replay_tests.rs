//! Unit tests of the backtest's replay and comparison.

use super::*;
