//! (being written) behavioural suite
