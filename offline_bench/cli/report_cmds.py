"""(commands added by their issue)"""
