//! (being written) The RabbitMQ transport.
