"""MQTT for every service: clients, the platform's lean consumer, the embedded
broker, reconnecting, refusals, and the stack broker's access roles."""
