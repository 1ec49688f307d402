"""Event source pollers: SQS, Kinesis, DynamoDB Streams, RabbitMQ and Redis Streams
(each arrives with its own issue)."""
