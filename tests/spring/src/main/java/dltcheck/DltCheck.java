package dltcheck;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.annotation.EnableKafka;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.messaging.handler.annotation.Header;
import org.springframework.util.backoff.FixedBackOff;

/**
 * A Spring Kafka consumer of dead letters, for tests/integration/test_spring_dlt.py.
 *
 * <p>It reads the dead-letter topics {@code dlt.topics} with a {@code @KafkaListener} that
 * requires every {@code kafka_dlt-*} header Spring's {@code DeadLetterPublishingRecoverer} writes
 * for a listener failure, and prints one JSON line per record on stdout ({@code "dead"}: what it
 * received and decoded; {@code "error"}: a record the listener refused, e.g. a required header
 * was missing). Before that it produces, with the Java client, the records the test needs from
 * Java: one with a null header value to {@code produce.topic}, and two to
 * {@code reference.topic}, whose listener throws so that Spring's own recoverer dead-letters them
 * to {@code reference.dlt} (the reference the bridge's dead letters are compared with). It exits
 * once it has seen {@code dlt.expected} records, or after {@code timeout.s}.
 *
 * <p>System properties: {@code bootstrap}, {@code group}, {@code dlt.topics} (comma-separated),
 * {@code dlt.expected}, {@code produce.topic}, {@code reference.topic}, {@code reference.dlt},
 * {@code ledger} (the test's {@code ledger} header value), {@code timeout.s}.
 */
public final class DltCheck {

	private DltCheck() {
	}

	public static void main(String[] args) throws Exception {
		long timeoutS = Long.parseLong(System.getProperty("timeout.s", "60"));
		try (AnnotationConfigApplicationContext context = new AnnotationConfigApplicationContext(Config.class)) {
			Tally tally = context.getBean(Tally.class);
			produce(context.getBean(KafkaTemplate.class));
			boolean done = tally.seen.await(timeoutS, TimeUnit.SECONDS);
			Out.line("{\"done\":" + done + "}");
		}
	}

	@SuppressWarnings("unchecked")
	private static void produce(KafkaTemplate<?, ?> anyTemplate) throws Exception {
		KafkaTemplate<byte[], byte[]> template = (KafkaTemplate<byte[], byte[]>) anyTemplate;
		byte[] ledger = System.getProperty("ledger").getBytes(StandardCharsets.UTF_8);
		List<org.apache.kafka.common.header.Header> headers = List.of(
				new RecordHeader("ledger", ledger),
				new RecordHeader("mode", "permanent".getBytes(StandardCharsets.UTF_8)),
				new RecordHeader("null-valued", null),
				new RecordHeader("empty", new byte[0]));
		send(template, "java", new ProducerRecord<>(System.getProperty("produce.topic"), null, null,
				"java-key".getBytes(StandardCharsets.UTF_8), "{\"from\":\"java\"}".getBytes(StandardCharsets.UTF_8),
				headers));
		for (String how : List.of("cause", "no-cause")) {
			send(template, "reference-" + how, new ProducerRecord<>(System.getProperty("reference.topic"), null,
					null, how.getBytes(StandardCharsets.UTF_8), how.getBytes(StandardCharsets.UTF_8),
					List.of(new RecordHeader("ledger", ledger))));
		}
	}

	private static void send(KafkaTemplate<byte[], byte[]> template, String what,
			ProducerRecord<byte[], byte[]> record) throws Exception {
		RecordMetadata meta = template.send(record).get(30, TimeUnit.SECONDS).getRecordMetadata();
		Out.line("{\"produced\":" + Out.quote(what) + ",\"topic\":" + Out.quote(meta.topic()) + ",\"partition\":"
				+ meta.partition() + ",\"offset\":" + meta.offset() + ",\"timestamp\":" + meta.timestamp() + "}");
	}

	/** The Spring configuration: a consumer and a producer of bytes, two listener factories. */
	@Configuration
	@EnableKafka
	public static class Config {

		@Bean
		public DefaultKafkaConsumerFactory<byte[], byte[]> consumerFactory() {
			return new DefaultKafkaConsumerFactory<>(Map.of(
					ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, System.getProperty("bootstrap"),
					ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest",
					ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class,
					ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class));
		}

		@Bean
		public KafkaTemplate<byte[], byte[]> template() {
			return new KafkaTemplate<>(new DefaultKafkaProducerFactory<>(Map.of(
					ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, System.getProperty("bootstrap"),
					ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class,
					ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class)));
		}

		/** The dead-letter reader's containers: a record the listener refuses is printed, not retried. */
		@Bean
		public ConcurrentKafkaListenerContainerFactory<byte[], byte[]> readerFactory(
				DefaultKafkaConsumerFactory<byte[], byte[]> consumers, Tally tally) {
			ConcurrentKafkaListenerContainerFactory<byte[], byte[]> factory = new ConcurrentKafkaListenerContainerFactory<>();
			factory.setConsumerFactory(consumers);
			factory.setCommonErrorHandler(new DefaultErrorHandler(tally::refused,
					new FixedBackOff(0L, 0L)));
			return factory;
		}

		/** Spring's own dead-lettering, with its defaults: the reference. */
		@Bean
		public ConcurrentKafkaListenerContainerFactory<byte[], byte[]> referenceFactory(
				DefaultKafkaConsumerFactory<byte[], byte[]> consumers, KafkaTemplate<byte[], byte[]> template) {
			ConcurrentKafkaListenerContainerFactory<byte[], byte[]> factory = new ConcurrentKafkaListenerContainerFactory<>();
			factory.setConsumerFactory(consumers);
			String dlt = System.getProperty("reference.dlt");
			DeadLetterPublishingRecoverer recoverer = new DeadLetterPublishingRecoverer(template,
					(record, exception) -> new TopicPartition(dlt, -1));
			factory.setCommonErrorHandler(new DefaultErrorHandler(recoverer, new FixedBackOff(0L, 0L)));
			return factory;
		}

		@Bean
		public Tally tally() {
			return new Tally(Integer.parseInt(System.getProperty("dlt.expected")));
		}

		@Bean
		public Reader reader(Tally tally) {
			return new Reader(tally);
		}

		@Bean
		public Failing failing() {
			return new Failing();
		}

	}

	/** A listener that fails on every record, the way an application's listener would. */
	public static class Failing {

		@KafkaListener(id = "reference", topics = "${reference.topic}", groupId = "${group}-reference",
				containerFactory = "referenceFactory")
		public void listen(ConsumerRecord<byte[], byte[]> record) {
			if ("cause".equals(new String(record.value(), StandardCharsets.UTF_8))) {
				throw new IllegalStateException("reference failure",
						new java.io.IOException("reference cause"));
			}
			throw new IllegalStateException("reference failure without a cause");
		}

	}

	/** The dead-letter listener: every kafka_dlt-* header of a listener failure is required. */
	public static class Reader {

		private final Tally tally;

		Reader(Tally tally) {
			this.tally = tally;
		}

		@KafkaListener(id = "dlt-reader", topics = "#{'${dlt.topics}'.split(',')}", groupId = "${group}",
				containerFactory = "readerFactory")
		public void read(ConsumerRecord<byte[], byte[]> record,
				@Header(KafkaHeaders.DLT_ORIGINAL_TOPIC) byte[] topic,
				@Header(KafkaHeaders.DLT_ORIGINAL_PARTITION) byte[] partition,
				@Header(KafkaHeaders.DLT_ORIGINAL_OFFSET) byte[] offset,
				@Header(KafkaHeaders.DLT_ORIGINAL_TIMESTAMP) byte[] timestamp,
				@Header(KafkaHeaders.DLT_ORIGINAL_TIMESTAMP_TYPE) byte[] timestampType,
				@Header(KafkaHeaders.DLT_ORIGINAL_CONSUMER_GROUP) byte[] group,
				@Header(KafkaHeaders.DLT_EXCEPTION_FQCN) byte[] fqcn,
				@Header(KafkaHeaders.DLT_EXCEPTION_CAUSE_FQCN) byte[] causeFqcn,
				@Header(KafkaHeaders.DLT_EXCEPTION_MESSAGE) byte[] message,
				@Header(KafkaHeaders.DLT_EXCEPTION_STACKTRACE) byte[] stacktrace,
				@Header("ledger") byte[] ledger) {
			StringBuilder line = new StringBuilder("{\"dead\":").append(Out.quote(record.topic()));
			line.append(",\"offset\":").append(record.offset());
			line.append(",\"key\":").append(Out.b64(record.key()));
			line.append(",\"value\":").append(Out.b64(record.value()));
			line.append(",\"headers\":").append(Out.headers(record.headers()));
			line.append(",\"decoded\":{\"topic\":").append(Out.quote(utf8(topic)));
			line.append(",\"partition\":").append(ByteBuffer.wrap(partition).getInt());
			line.append(",\"offset\":").append(ByteBuffer.wrap(offset).getLong());
			line.append(",\"timestamp\":").append(ByteBuffer.wrap(timestamp).getLong());
			line.append(",\"timestamp_type\":").append(Out.quote(TimestampType.forName(utf8(timestampType)).toString()));
			line.append(",\"group\":").append(Out.quote(utf8(group)));
			line.append(",\"fqcn\":").append(Out.quote(utf8(fqcn)));
			line.append(",\"cause_fqcn\":").append(Out.quote(utf8(causeFqcn)));
			line.append(",\"message\":").append(Out.quote(utf8(message)));
			line.append(",\"stacktrace_chars\":").append(utf8(stacktrace).length());
			line.append(",\"ledger\":").append(Out.quote(utf8(ledger))).append("}}");
			Out.line(line.toString());
			this.tally.seen.countDown();
		}

		private static String utf8(byte[] bytes) {
			return new String(bytes, StandardCharsets.UTF_8);
		}

	}

	/** Counts the dead letters read or refused. */
	public static class Tally {

		final CountDownLatch seen;

		Tally(int expected) {
			this.seen = new CountDownLatch(expected);
		}

		void refused(ConsumerRecord<?, ?> record, Exception exception) {
			Throwable cause = exception.getCause() != null ? exception.getCause() : exception;
			Out.line("{\"error\":" + Out.quote(cause.toString()) + ",\"topic\":" + Out.quote(record.topic())
					+ ",\"offset\":" + record.offset() + "}");
			this.seen.countDown();
		}

	}

	/** JSON lines on stdout, written by hand (no JSON library to download). */
	static final class Out {

		private Out() {
		}

		static synchronized void line(String json) {
			System.out.println(json);
			System.out.flush();
		}

		static String headers(Headers headers) {
			List<String> pairs = new ArrayList<>();
			for (org.apache.kafka.common.header.Header header : headers) {
				pairs.add("[" + quote(header.key()) + "," + b64(header.value()) + "]");
			}
			return "[" + String.join(",", pairs) + "]";
		}

		static String b64(byte[] bytes) {
			return bytes == null ? "null" : "\"" + Base64.getEncoder().encodeToString(bytes) + "\"";
		}

		static String quote(String text) {
			StringBuilder out = new StringBuilder("\"");
			for (char c : text.toCharArray()) {
				if (c == '"' || c == '\\') {
					out.append('\\').append(c);
				}
				else if (c < 0x20) {
					out.append(String.format("\\u%04x", (int) c));
				}
				else {
					out.append(c);
				}
			}
			return out.append('"').toString();
		}

	}

}
