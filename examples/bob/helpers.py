def format_message(message):
    return f"<bob> {message.upper()}"
