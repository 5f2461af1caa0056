def format_message(message):
    return f"[alice v2] {message}!"
