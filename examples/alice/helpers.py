def format_message(message):
    return f"[alice] {message}"
