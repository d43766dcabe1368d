"""The bridge process, sole owner of the KafkaConsumer: the loop and its parts."""
