"""The HTTP gateway: takes API requests and hands them to the services over the broker."""
