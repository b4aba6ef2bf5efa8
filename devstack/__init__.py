"""The local real stack: Apache Kafka from Maven Central on Java, plus the services."""
